"""`gotunnel render --engine nginx` matches its golden files (the kit's `check_render_golden`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.golden import check_render_golden
from gotunnel_nginx.engine import NginxEngine

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_render_matches_golden_files(gotunnel: Gotunnel, tmp_path: Path) -> None:
    if not NginxEngine.probe({}).found:
        pytest.skip("nginx is not installed")
    check_render_golden(gotunnel, "nginx", GOLDEN / "nginx", tmp_path)
