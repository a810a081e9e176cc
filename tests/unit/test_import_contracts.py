"""The layers of the package, as pyproject.toml's import-linter contracts state them: they
hold today, and each breaks when an import crosses it (so none of them is vacuous)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hearthlink_trio

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(hearthlink_trio.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        # COLUMNS: one line per contract in the report, not wrapped at 80 columns.
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_package_keeps_its_contracts(tmp_path: Path) -> None:
    result = _lint_imports(PACKAGE.parent, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "imports", "broken"),
    [
        (
            "services/common/settings.py",
            "hearthlink_trio.supervisor.state",
            "The services import nothing of the supervisor side",
        ),
        (
            "process/spawn.py",
            "hearthlink_trio.services.vault.app",
            "The supervisor side never imports a service",
        ),
        ("control/api.py", "hearthlink_trio.supervisor.status", "Layers: cli above"),
        ("config/model.py", "hearthlink_trio.process.spawn", "Layers: cli above"),
        ("process/spawn.py", "hearthlink_trio.probes.http", "Layers: cli above"),
        ("probes/tcp.py", "hearthlink_trio.control.client", "Layers: cli above"),
        ("supervisor/state.py", "hearthlink_trio.cli.app", "Layers: cli above"),
        ("_util.py", "hearthlink_trio.lockfile", "Layers: cli above"),
        (
            "services/alden/app.py",
            "hearthlink_trio.services.vault.store",
            "Each service stands on services.common alone",
        ),
        (
            "supervisor/runner.py",
            "hearthlink_trio.control.server",
            "The supervisor's core starts no shell",
        ),
    ],
)
def test_an_import_across_a_layer_breaks_a_contract(
    tmp_path: Path, module: str, imports: str, broken: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "hearthlink_trio", ignore=shutil.ignore_patterns("__pycache__"))
    with (src / "hearthlink_trio" / module).open("a") as f:
        f.write(f"\nimport {imports}\n")
    result = _lint_imports(src, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    verdicts = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert len(verdicts) == 1, result.stdout
    assert verdicts[0].startswith(broken), result.stdout
    assert imports in result.stdout  # the report names the import to remove


def test_a_new_subpackage_must_be_given_its_layer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "hearthlink_trio", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "hearthlink_trio" / "newpart").mkdir()
    (src / "hearthlink_trio" / "newpart" / "__init__.py").write_text("")
    result = _lint_imports(src, tmp_path)
    assert result.returncode == 1
    assert "hearthlink_trio.newpart" in result.stdout
