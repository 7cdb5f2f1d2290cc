"""Suite-wide fixtures: the real-bbolt oracle (built once per session)."""

from __future__ import annotations

import pytest

from tests.helpers import require_path, require_tool
from tests.oracle import BBOLT_SOURCE, Oracle, build_oracle


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    """The Go program in tests/oracle, linked against Debian's bbolt 1.3.6.

    Skips locally when Go or the bbolt sources are missing; fails instead when
    BOLTIMAGES_REQUIRE_COMPAT=1 (CI)."""
    go = require_tool("go")
    require_path(BBOLT_SOURCE, "bbolt 1.3.6 sources (golang-github-coreos-bbolt-dev)")
    return Oracle(build_oracle(go))
