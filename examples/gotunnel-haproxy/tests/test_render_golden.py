"""`gotunnel render --engine haproxy` matches its golden files (the kit's `check_render_golden`),
and `gotunnel validate --engine haproxy` (`haproxy -c`) accepts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.golden import check_render_golden
from gotunnel_haproxy.engine import HAProxyEngine

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_render_matches_golden_files(gotunnel: Gotunnel, tmp_path: Path) -> None:
    if not HAProxyEngine.probe({}).found:
        pytest.skip("haproxy is not installed")
    check_render_golden(gotunnel, "haproxy", GOLDEN / "haproxy", tmp_path)
