"""The foundation's pure helpers, without a service process."""

from __future__ import annotations

import pytest

from hearthlink_trio.services.common.outbound import is_https


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://localhost/", True),
        ("HTTPS://localhost/", True),
        ("Https://127.0.0.1:8443/v1", True),
        ("http://localhost/", False),
        ("HTTP://localhost/", False),
        ("https", False),
        ("httpsx://localhost/", False),
        ("http://https.example/", False),
        ("", False),
    ],
)
def test_is_https_reads_the_scheme_in_any_case(url: str, expected: bool) -> None:
    assert is_https(url) is expected
