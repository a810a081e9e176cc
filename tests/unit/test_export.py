"""``hearthlink export``: compose files, Kubernetes manifests and the Dockerfile.

Pure: configs are exported in-process; the only processes are the offline validators
(check-jsonschema with its vendored compose-spec schema, kubernetes-validate).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearthlink_trio import __version__
from hearthlink_trio.cli.app import app
from hearthlink_trio.cli.export import export_compose, export_kubernetes, render_dockerfile
from hearthlink_trio.cli.export.compose import FAST_STARTUP_PROBE, duration
from hearthlink_trio.cli.export.kubernetes import JOB_WAITER, KUBECTL_IMAGE, seconds
from hearthlink_trio.config import default_config_path, load_config
from hearthlink_trio.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.toml"
#: The Kubernetes version the manifests are validated against (bundled by kubernetes-validate).
KUBERNETES_VERSION = "1.30.0"

TOKEN = "known-api-token-value-0123456789"
VAULT_KEY = "S2VlcFRoaXNWYXVsdEtleU91dE9mVGhlRXhwb3J0ISE="
PG_PASSWORD = "pg-password-never-exported-4242"

STACK = """
[supervisor]
data_dir = "state"
env_file = "common.env"

[health]
startup_interval = 2.0
startup_period = 30.5
steady_interval = 7.5
timeout = 2.5
failure_threshold = 4

[restart]
max_attempts = 3

[services.db]
image = "postgres:16"
command = ["postgres", "-D", "{data_dir}/pg", "-p", "{port}"]
port = 5432
probe = { exec = ["pg_isready", "-h", "{host}", "-p", "{port}"] }
kill_mode = "mixed"
stop_signal = "SIGINT"
stop_timeout = 30.0
secrets = { POSTGRES_PASSWORD = "pg.password" }

[services.cache]
image = "redis:7"
command = ["redis-server", "--port", "{port}", "--bind", "{host}"]
port = 6379
probe = { tcp = true }

[services.migrate]
kind = "task"
image = "example/app:1"
command = ["python", "-m", "app.migrate"]
depends_on = { db = "healthy" }
secrets = { POSTGRES_PASSWORD = "pg.password" }

[services.worker]
image = "example/app:1"
command = ["python", "-m", "app.worker"]
probe = WORKER_PROBE
depends_on = { migrate = "completed", cache = "started" }

[services.app]
image = "example/app:1"
command = ["python", "-m", "app.web", "--bind", "{host}:{port}"]
port = 8080
replicas = 2
probe = { http = "/healthz", json = false }
env = { GREETING = "costs $5", DATA = "{data_dir}/uploads" }
depends_on = { migrate = "completed", db = "healthy", cache = "started", worker = "healthy" }
"""
LOG_PROBE = '{ log = "worker ready" }'
EXEC_PROBE = '{ exec = ["python", "-m", "app.worker", "--check"] }'


@pytest.fixture(autouse=True)
def _known_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHLINK_API_TOKEN", TOKEN)
    monkeypatch.setenv("HEARTHLINK_VAULT_KEY", VAULT_KEY)
    monkeypatch.delenv("HEARTHLINK_CONFIG", raising=False)


def stack(tmp_path: Path, worker_probe: str = LOG_PROBE) -> Path:
    """The real-stack example, with secrets in its data dir that must never be exported."""
    path = tmp_path / "stack.toml"
    path.write_text(STACK.replace("WORKER_PROBE", worker_probe))
    (tmp_path / "common.env").write_text("LOG_LEVEL=info\n")
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "pg.password").write_text(PG_PASSWORD + "\n")
    (state / "api.token").write_text(TOKEN + "\n")
    return path


def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled config, with a data dir holding a Vault key."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "vault.key").write_text(VAULT_KEY + "\n")
    (data / "api.token").write_text(TOKEN + "\n")
    monkeypatch.setenv("HEARTHLINK_DATA_DIR", str(data))
    return default_config_path()


def hello_with_images(tmp_path: Path) -> Path:
    text = HELLO.read_text().replace(
        'script = "hello_service.py"', 'script = "hello_service.py"\nimage = "example/hello:1"'
    )
    path = tmp_path / "hello.toml"
    path.write_text(text)
    shutil.copy(HELLO.parent / "hello_service.py", tmp_path)
    return path


# --- validators ---------------------------------------------------------------------------


def tool(name: str) -> str:
    """The validator's path: fails under CI=true when it is missing, else skips."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"{name} is not installed: pip install -e '.[dev]' (it is in the dev extra)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def validate_compose(text: str, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    checker = tool("check-jsonschema")
    out = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def validate_kubernetes(text: str, tmp_path: Path) -> None:
    path = tmp_path / "manifests.yaml"
    path.write_text(text)
    validator = tool("kubernetes-validate")
    out = subprocess.run(
        [validator, "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed" in out.stdout and "fail" not in out.stdout.lower()


def kinds(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(text)}


def no_secret_in(text: str) -> None:
    for value in (TOKEN, VAULT_KEY, PG_PASSWORD):
        assert value not in text


def export_cli(args: list[str]) -> int:
    result = app(args, result_action="return_value", exit_on_error=False)
    assert isinstance(result, int)
    return result


# --- compose --------------------------------------------------------------------------------


def test_bundled_config_to_compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = export_compose(bundled(tmp_path, monkeypatch))
    assert text.startswith(f"# Generated by hearthlink {__version__} from ")
    assert str(default_config_path()) in text.splitlines()[0]
    no_secret_in(text)
    validate_compose(text, tmp_path)
    services = yaml.safe_load(text)["services"]
    assert list(services) == ["alden", "vault", "core", "synapse"]
    vault = services["vault"]
    assert vault["image"] == f"hearthlink-trio:{__version__}"
    assert vault["command"] == [
        "hearthlink_trio.services.vault",
        "--host",
        "0.0.0.0",
        "--port",
        "8001",
    ]
    env = vault["environment"]
    assert env["HEARTHLINK_DATA_DIR"] == "/data"
    assert env["HEARTHLINK_SERVICE"] == "vault"
    assert env["HEARTHLINK_ALDEN_URL"] == "http://alden:8888"
    assert env["HEARTHLINK_VAULT_URL"] == "http://vault:8001"
    assert env["HEARTHLINK_API_TOKEN"].startswith("${HEARTHLINK_API_TOKEN:?")
    assert env["HEARTHLINK_VAULT_KEY"].startswith("${HEARTHLINK_VAULT_KEY:?")
    # A declared secret reaches only the service that declares it.
    assert "HEARTHLINK_VAULT_KEY" not in services["alden"]["environment"]
    assert vault["volumes"] == ["hearthlink-data:/data"]
    # Alden starts beside the Vault (its memory-only mode covers a late one): no wait.
    assert "depends_on" not in services["alden"]
    assert vault["stop_grace_period"] == "10s" and vault["stop_signal"] == "SIGTERM"
    assert vault["restart"] == "unless-stopped"
    assert vault["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
    assert "'/health'" in vault["healthcheck"]["test"][3]
    assert yaml.safe_load(text)["volumes"] == {"hearthlink-data": {}}


def test_compose_probe_numbers_follow_the_health_table(tmp_path: Path) -> None:
    path = stack(tmp_path)
    health = load_config(path, local=False).health
    services = yaml.safe_load(export_compose(path))["services"]
    for name in ("db", "cache", "app"):
        check = services[name]["healthcheck"]
        assert check["interval"] == "7500ms" == duration(health.steady_interval)
        assert check["retries"] == 4 == health.failure_threshold
        assert check["start_period"] == "30500ms" == duration(health.startup_period)
        assert check["timeout"] == "2500ms" == duration(health.timeout)
        assert check["start_interval"] == "100ms"
        assert check["start_interval"] == duration(min(FAST_STARTUP_PROBE, health.startup_interval))
    assert services["db"]["healthcheck"]["test"] == [
        "CMD",
        "pg_isready",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
    ]
    assert (
        "socket.create_connection(('127.0.0.1', 6379)"
        in services["cache"]["healthcheck"]["test"][3]
    )
    app_test = services["app"]["healthcheck"]["test"][3]
    assert "'/healthz'" in app_test and "r.status == 200 else" in app_test
    assert "json" not in app_test.split(";", 1)[1]


def test_compose_start_interval_is_at_most_startup_interval(tmp_path: Path) -> None:
    path = tmp_path / "fast.toml"
    path.write_text(
        '[health]\nstartup_interval = 0.05\n[services.web]\nimage = "x:1"\n'
        'command = ["web"]\nport = 8080\n'
    )
    check = yaml.safe_load(export_compose(path))["services"]["web"]["healthcheck"]
    assert check["start_interval"] == "50ms"


def test_real_stack_to_compose(tmp_path: Path) -> None:
    text = export_compose(stack(tmp_path))
    no_secret_in(text)
    validate_compose(text, tmp_path)
    services = yaml.safe_load(text)["services"]
    assert list(services)[:2] == ["db", "cache"]
    db, migrate, worker, web = (services[n] for n in ("db", "migrate", "worker", "app"))
    assert db["command"] == ["postgres", "-D", "/data/pg", "-p", "5432"]
    assert db["stop_signal"] == "SIGINT" and db["stop_grace_period"] == "30s"
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert db["environment"]["LOG_LEVEL"] == "info"
    assert migrate["restart"] == "no"
    assert "healthcheck" not in migrate
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "healthcheck" not in worker
    assert worker["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "cache": {"condition": "service_started"},
    }
    assert web["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "db": {"condition": "service_healthy"},
        "cache": {"condition": "service_started"},
        "worker": {"condition": "service_started"},
    }
    assert web["deploy"] == {"replicas": 2}
    assert "ports" not in web  # two replicas cannot share one host port
    assert web["command"][-1] == "0.0.0.0:8080"
    assert web["environment"]["GREETING"] == "costs $$5"
    assert web["environment"]["DATA"] == "/data/uploads"
    assert web["environment"]["HEARTHLINK_DB_URL"] == "http://db:5432"
    assert web["restart"] == "unless-stopped"
    assert "# Not carried over:" in text
    assert "#   worker: no healthcheck (its log probe" in text
    assert "#   app: waits for worker to start only: a log probe" in text


def test_hello_example_exports_once_it_names_images(tmp_path: Path) -> None:
    text = export_compose(hello_with_images(tmp_path))
    validate_compose(text, tmp_path)
    services = yaml.safe_load(text)["services"]
    assert services["hello"]["command"] == [
        "python",
        "hello_service.py",
        "--host",
        "0.0.0.0",
        "--port",
        "18080",
    ]
    assert services["world"]["depends_on"] == {"hello": {"condition": "service_healthy"}}
    text = export_kubernetes(hello_with_images(tmp_path))
    validate_kubernetes(text, tmp_path)


# --- kubernetes -------------------------------------------------------------------------------


def test_bundled_config_to_kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = export_kubernetes(bundled(tmp_path, monkeypatch), namespace="hearthlink")
    assert text.startswith(f"# Generated by hearthlink {__version__} from ")
    no_secret_in(text)
    validate_kubernetes(text, tmp_path)
    docs = kinds(text)
    assert ("Namespace", "hearthlink") in docs
    claim = docs["PersistentVolumeClaim", "hearthlink-data"]
    assert claim["metadata"]["namespace"] == "hearthlink"
    for name, port in (("vault", 8001), ("alden", 8888), ("core", 8000), ("synapse", 8002)):
        service = docs["Service", name]
        assert service["spec"]["ports"] == [{"port": port, "targetPort": port, "protocol": "TCP"}]
        pod = docs["Deployment", name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == f"hearthlink-trio:{__version__}"
        assert container["args"][0] == f"hearthlink_trio.services.{name}"
        assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
        assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "hearthlink-data"}
        assert pod["terminationGracePeriodSeconds"] == 10
        env = {e["name"]: e for e in container["env"]}
        assert env["HEARTHLINK_DATA_DIR"]["value"] == "/data"
        assert env["HEARTHLINK_API_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "hearthlink-secrets", "key": "HEARTHLINK_API_TOKEN"}
        }
        assert ("HEARTHLINK_VAULT_KEY" in env) == (name == "vault")
    alden = docs["Deployment", "alden"]["spec"]["template"]["spec"]
    assert "initContainers" not in alden
    assert "kubectl create secret generic hearthlink-secrets -n hearthlink" in text


def test_kubernetes_probe_numbers_follow_the_health_table(tmp_path: Path) -> None:
    path = stack(tmp_path, EXEC_PROBE)
    health = load_config(path, local=False).health
    docs = kinds(export_kubernetes(path))
    for name in ("db", "cache", "worker", "app"):
        container = docs["Deployment", name]["spec"]["template"]["spec"]["containers"][0]
        startup = container["startupProbe"]
        assert startup["periodSeconds"] == 1
        assert startup["failureThreshold"] * startup["periodSeconds"] >= health.startup_period
        assert startup["failureThreshold"] == math.ceil(health.startup_period)
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert probe["periodSeconds"] == 8 == seconds(health.steady_interval)
            assert probe["failureThreshold"] == 4 == health.failure_threshold
            assert probe["timeoutSeconds"] == 3 == seconds(health.timeout)
    db = docs["Deployment", "db"]["spec"]["template"]["spec"]["containers"][0]
    assert db["livenessProbe"]["exec"] == {
        "command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]
    }
    cache = docs["Deployment", "cache"]["spec"]["template"]["spec"]["containers"][0]
    assert cache["readinessProbe"]["tcpSocket"] == {"port": 6379}
    web = docs["Deployment", "app"]["spec"]["template"]["spec"]["containers"][0]
    assert web["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}


def test_real_stack_to_kubernetes(tmp_path: Path) -> None:
    text = export_kubernetes(stack(tmp_path, EXEC_PROBE))
    no_secret_in(text)
    validate_kubernetes(text, tmp_path)
    docs = kinds(text)
    # The migration is a Job, run once however many pods wait for it (app has 2 replicas).
    migrate = docs["Job", "migrate"]["spec"]
    assert (migrate["completions"], migrate["parallelism"]) == (1, 1)
    job_pod = migrate["template"]["spec"]
    assert job_pod["containers"][0]["args"] == ["python", "-m", "app.migrate"]
    assert [c["name"] for c in job_pod["initContainers"]] == ["wait-for-db"]
    web = docs["Deployment", "app"]
    assert web["spec"]["replicas"] == 2
    pod = web["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [
        "wait-for-job-migrate",
        "wait-for-db",
        "wait-for-cache",
    ]
    waiter = pod["initContainers"][0]
    assert waiter["image"] == KUBECTL_IMAGE
    assert "kubectl wait --for=condition=complete --timeout=30s job/migrate" in waiter["command"][2]
    # The pods that wait for a Job run under an account that may only read Jobs.
    assert pod["serviceAccountName"] == JOB_WAITER
    assert docs["Deployment", "worker"]["spec"]["template"]["spec"]["serviceAccountName"] == (
        JOB_WAITER
    )
    assert "serviceAccountName" not in job_pod
    assert job_pod["automountServiceAccountToken"] is False
    assert ("ServiceAccount", JOB_WAITER) in docs
    assert docs["Role", JOB_WAITER]["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}
    ]
    binding = docs["RoleBinding", JOB_WAITER]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": JOB_WAITER,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": JOB_WAITER}]
    # The worker has no port: nothing to wait on, and said so.
    assert "# app does not wait for worker: worker has no port to wait on" in text
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["GREETING"]["value"] == "costs $$5"
    assert env["HEARTHLINK_APP_URL"]["value"] == "http://app:8080"
    assert "POSTGRES_PASSWORD" not in env
    db = docs["Deployment", "db"]["spec"]["template"]["spec"]
    assert db["terminationGracePeriodSeconds"] == 30
    assert "# stop_signal SIGINT is not carried over" in text
    assert ("Service", "worker") not in docs
    assert "enableServiceLinks" in db and db["enableServiceLinks"] is False


def test_job_waits_take_the_kubectl_image_and_namespace_given(tmp_path: Path) -> None:
    text = export_kubernetes(
        stack(tmp_path, EXEC_PROBE), namespace="shop", kubectl_image="example/kubectl:9"
    )
    validate_kubernetes(text, tmp_path)
    docs = kinds(text)
    init = docs["Deployment", "app"]["spec"]["template"]["spec"]["initContainers"]
    assert init[0]["image"] == "example/kubectl:9"
    binding = docs["RoleBinding", JOB_WAITER]
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": JOB_WAITER, "namespace": "shop"}
    ]
    target = tmp_path / "k.yaml"
    args = ["export", "kubernetes", "--config", str(stack(tmp_path, EXEC_PROBE))]
    assert export_cli([*args, "--kubectl-image", "example/kubectl:8", "-o", str(target)]) == 0
    assert "image: example/kubectl:8" in target.read_text()


def test_no_job_waited_for_means_no_service_account(tmp_path: Path) -> None:
    docs = kinds(export_kubernetes(hello_with_images(tmp_path)))
    assert not {kind for kind, _ in docs} & {"ServiceAccount", "Role", "RoleBinding"}
    pod = docs["Deployment", "hello"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_a_task_nothing_waits_for_is_a_job(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[restart]\nmax_attempts = 4\n[services.seed]\nkind = "task"\nimage = "x:1"\n'
        'command = ["seed"]\n[services.once]\nkind = "task"\nimage = "x:1"\n'
        'command = ["once"]\nrestart = "never"\n'
    )
    text = export_kubernetes(path)
    validate_kubernetes(text, tmp_path)
    docs = kinds(text)
    assert docs["Job", "seed"]["spec"]["backoffLimit"] == 4
    assert docs["Job", "once"]["spec"]["backoffLimit"] == 0
    assert docs["Job", "seed"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert docs["Job", "seed"]["spec"]["completions"] == 1


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["compose", "kubernetes"])
def test_a_service_without_an_image_is_refused(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.yaml"
    code = export_cli(["export", engine, "--config", str(HELLO), "-o", str(target)])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hello.toml: services.hello.image: required to export to {engine}",
        f"hello.toml: services.world.image: required to export to {engine}",
    ]
    assert not target.exists()


def test_a_log_probe_is_refused_for_kubernetes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.yaml"
    code = export_cli(["export", "kubernetes", "--config", str(stack(tmp_path)), "-o", str(target)])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "stack.toml: services.worker.probe: a log probe cannot be exported to kubernetes "
        "(its probes cannot read a container's output); use an exec, tcp or http probe"
    ]
    assert not target.exists()


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[services.my_web]\ncommand = ["web", "--n", "{replica}"]\nport = 8080\nreplicas = 2\n'
        'env = { HEARTHLINK_API_TOKEN = "literal" }\nprobe = { log = "up" }\n'
    )
    with pytest.raises(ConfigError) as info:
        export_kubernetes(path)
    assert info.value.problems == [
        "bad.toml: services.my_web.image: required to export to kubernetes",
        "bad.toml: services.my_web.probe: a log probe cannot be exported to kubernetes "
        "(its probes cannot read a container's output); use an exec, tcp or http probe",
        "bad.toml: services.my_web: 'my_web' is not a valid Kubernetes name (lowercase "
        "letters, digits and '-', at most 63, ending in a letter or digit); rename the table",
        "bad.toml: services.my_web.replicas: {replica} would differ between replicas, which "
        "one Deployment cannot express; use the container's hostname instead",
        "bad.toml: services.my_web.env.HEARTHLINK_API_TOKEN: a secret's value is never "
        "exported; remove it from env (the kubernetes export takes HEARTHLINK_API_TOKEN from "
        "the engine's secrets)",
    ]


def test_a_bad_namespace_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.yaml"
    path = hello_with_images(tmp_path)
    args = ["export", "kubernetes", "--config", str(path), "--namespace", "Bad_NS"]
    assert export_cli([*args, "-o", str(target)]) == 2
    assert "--namespace: 'Bad_NS' is not a valid Kubernetes name" in capsys.readouterr().err
    assert not target.exists()


# --- the CLI and the Dockerfile -----------------------------------------------------------------


def test_cli_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = bundled(tmp_path, monkeypatch)
    target = tmp_path / "compose.yaml"
    assert export_cli(["export", "compose", "-o", str(target)]) == 0
    assert target.read_text() == export_compose(config)
    no_secret_in(target.read_text())


def test_an_unwritable_output_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "Dockerfile"
    assert export_cli(["export", "dockerfile", "-o", str(target)]) == 1
    assert capsys.readouterr().err.startswith(f"Cannot write {target}: ")


def test_dockerfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = render_dockerfile()
    lines = text.splitlines()
    assert lines[0] == (
        f"# Generated by hearthlink {__version__} with `hearthlink export dockerfile`."
    )
    assert "FROM python:3.12-slim" in lines
    assert "EXPOSE 8000 8001 8002 8888" in lines
    assert 'ENTRYPOINT ["python", "-m"]' in lines
    assert any(line.startswith("USER ") and not line.startswith("USER root") for line in lines)
    assert not any(line.startswith("HEALTHCHECK") for line in lines)
    assert "RUN pip install . && rm -rf /src" in lines
    assert export_cli(["export", "dockerfile"]) == 0
    assert capsys.readouterr().out == text


# --- the newer keys -------------------------------------------------------------------------

HOOKS = """
[services.web]
image = "example/web:1"
command = ["serve", "--port", "{port}"]
port = 8080
probe = { tcp = true }
post_start = ["sh", "-c", "echo up on {host}:{port} costs $5"]
pre_stop = ["web-drain", "--port", "{port}"]
on_failure = ["notify", "web"]
max_memory = "512M"

[services.tiny]
image = "example/web:1"
command = ["tiny"]
probe = "none"
max_memory = 1000
profiles = ["small", "debug"]
"""


def test_max_memory_is_the_engines_memory_limit(tmp_path: Path) -> None:
    path = tmp_path / "hooks.toml"
    path.write_text(HOOKS)
    compose = export_compose(path)
    validate_compose(compose, tmp_path)
    services = yaml.safe_load(compose)["services"]
    assert services["web"]["mem_limit"] == "512m"
    assert services["tiny"]["mem_limit"] == "1000"
    manifests = export_kubernetes(path)
    validate_kubernetes(manifests, tmp_path)
    docs = kinds(manifests)
    limits = {
        name: docs["Deployment", name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        for name in ("web", "tiny")
    }
    assert limits == {
        "web": {"limits": {"memory": "512Mi"}},
        "tiny": {"limits": {"memory": "1000"}},
    }


def test_profiles_are_compose_profiles(tmp_path: Path) -> None:
    path = tmp_path / "hooks.toml"
    path.write_text(HOOKS)
    services = yaml.safe_load(export_compose(path))["services"]
    assert services["tiny"]["profiles"] == ["small", "debug"]
    assert "profiles" not in services["web"]
    manifests = export_kubernetes(path)
    assert "# profiles small, debug are not carried over: everything in these" in manifests


def test_hooks_become_compose_hooks_and_lifecycle_handlers(tmp_path: Path) -> None:
    path = tmp_path / "hooks.toml"
    path.write_text(HOOKS)
    compose = export_compose(path)
    validate_compose(compose, tmp_path)
    web = yaml.safe_load(compose)["services"]["web"]
    # A hook runs inside the container: {host} is its loopback; $ is escaped for compose.
    assert web["post_start"] == [{"command": ["sh", "-c", "echo up on 127.0.0.1:8080 costs $$5"]}]
    assert web["pre_stop"] == [{"command": ["web-drain", "--port", "8080"]}]
    assert "#   web: on_failure (compose has no hook for a service that gives up)" in compose
    manifests = export_kubernetes(path)
    validate_kubernetes(manifests, tmp_path)
    container = kinds(manifests)["Deployment", "web"]["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"] == {
        "postStart": {"exec": {"command": ["sh", "-c", "echo up on 127.0.0.1:8080 costs $5"]}},
        "preStop": {"exec": {"command": ["web-drain", "--port", "8080"]}},
    }
    assert "# on_failure is not carried over: Kubernetes has no hook for giving up" in manifests


SCHEDULED = """
[services.report]
kind = "task"
image = "example/app:1"
command = ["python", "-m", "app.report"]
schedule = "SCHEDULE"

[services.mailer]
image = "example/app:1"
command = ["python", "-m", "app.mailer"]
probe = "none"
depends_on = { report = "completed" }
"""


@pytest.mark.parametrize(
    ("schedule", "cron"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("30 2 * * 1-5", "30 2 * * 1-5"),
        ("every 60", "* * * * *"),
        ("every 300", "*/5 * * * *"),
        ("every 7200", "0 */2 * * *"),
        ("every 86400", "0 0 * * *"),
    ],
)
def test_a_scheduled_task_is_a_cronjob(schedule: str, cron: str, tmp_path: Path) -> None:
    path = tmp_path / "cron.toml"
    path.write_text(SCHEDULED.replace("SCHEDULE", schedule))
    text = export_kubernetes(path)
    validate_kubernetes(text, tmp_path)
    docs = kinds(text)
    job = docs["CronJob", "report"]["spec"]
    assert job["schedule"] == cron
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert ("Job", "report") not in docs
    # Its Jobs have generated names: a dependent cannot wait for one, and says so.
    mailer = docs["Deployment", "mailer"]["spec"]["template"]["spec"]
    assert "initContainers" not in mailer and "serviceAccountName" not in mailer
    assert "# mailer does not wait for report to complete: report is a CronJob" in text
    assert ("ServiceAccount", JOB_WAITER) not in docs


@pytest.mark.parametrize("schedule", ["every 7", "every 420", "every 25200", "every 90"])
def test_a_schedule_cron_cannot_say_is_refused(
    schedule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cron.toml"
    path.write_text(SCHEDULED.replace("SCHEDULE", schedule))
    assert export_cli(["export", "kubernetes", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"cron.toml: services.report.schedule: {schedule!r} is not a cron schedule (a "
        "CronJob's): every N must be whole minutes dividing an hour, or whole hours dividing "
        "a day; write a cron expression\n"
    )


def test_a_schedule_is_refused_for_compose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cron.toml"
    path.write_text(SCHEDULED.replace("SCHEDULE", "*/5 * * * *"))
    target = tmp_path / "compose.yaml"
    assert export_cli(["export", "compose", "--config", str(path), "-o", str(target)]) == 2
    assert capsys.readouterr().err == (
        "cron.toml: services.report.schedule: compose has no schedule; run `docker compose run "
        "--rm report` from the host's cron, or export to kubernetes (a CronJob)\n"
    )
    assert not target.exists()


HELD = """
[services.web]
image = "example/web:1"
command = ["serve", "--port", "{port}"]
port = 8080
probe = { http = "/health", json = false }
socket = true
strategy = "recreate"
replicas = 2

[services.api]
image = "example/api:1"
command = ["api", "--port", "{port}"]
port = 8090
probe = { tcp = true }
socket = true
"""


def test_a_held_socket_is_dropped_and_recreate_is_the_deployment_strategy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.toml"
    path.write_text(HELD)
    compose = export_compose(path)
    validate_compose(compose, tmp_path)
    services = yaml.safe_load(compose)["services"]
    # The engines' services keep their own ports: no word of the socket anywhere.
    assert services["api"]["ports"] == ["127.0.0.1:8090:8090"]
    assert all("socket" not in service for service in services.values())
    assert "LISTEN_" not in compose
    manifests = export_kubernetes(path)
    validate_kubernetes(manifests, tmp_path)
    docs = kinds(manifests)
    assert docs["Deployment", "web"]["spec"]["strategy"] == {"type": "Recreate"}
    assert "strategy" not in docs["Deployment", "api"]["spec"]  # rolling: the default
    assert docs["Service", "web"]["spec"]["ports"][0]["port"] == 8080
    assert "LISTEN_" not in manifests


@pytest.mark.parametrize("engine", ["compose", "kubernetes"])
def test_a_notify_probe_is_refused(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notify.toml"
    path.write_text(
        '[services.db]\nimage = "x:1"\ncommand = ["db"]\nprobe = "notify"\nwatchdog = 5.0\n'
    )
    assert export_cli(["export", engine, "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"notify.toml: services.db.probe: the notify probe cannot be exported to {engine} (a "
        "container has no NOTIFY_SOCKET of the engine's to send READY=1 to); use an exec, tcp "
        "or http probe\n"
    )


def test_restart_with_a_dependency_is_compose_restart_true(tmp_path: Path) -> None:
    path = tmp_path / "dep.toml"
    path.write_text(
        '[services.db]\nimage = "db:1"\ncommand = ["db"]\nport = 5432\nprobe = { tcp = true }\n'
        '[services.app]\nimage = "app:1"\ncommand = ["app"]\nprobe = "none"\n'
        'depends_on = { db = { condition = "healthy", restart = true } }\n'
        '[services.other]\nimage = "app:1"\ncommand = ["other"]\nprobe = "none"\n'
        'depends_on = { db = "started" }\n'
    )
    compose = export_compose(path)
    validate_compose(compose, tmp_path)
    services = yaml.safe_load(compose)["services"]
    assert services["app"]["depends_on"] == {
        "db": {"condition": "service_healthy", "restart": True}
    }
    assert services["other"]["depends_on"] == {"db": {"condition": "service_started"}}
    manifests = export_kubernetes(path)
    validate_kubernetes(manifests, tmp_path)
    assert "# restarting with db (depends_on restart = true) is not carried over" in manifests
