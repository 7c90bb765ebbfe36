"""`gotunnel render --engine envoy` matches its golden files (the kit's `check_render_golden`)."""

from __future__ import annotations

from pathlib import Path

from envoy_helpers import needs_envoy
from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.golden import check_render_golden

GOLDEN = Path(__file__).resolve().parent / "golden"


@needs_envoy
def test_render_matches_golden_files(gotunnel: Gotunnel, tmp_path: Path) -> None:
    check_render_golden(gotunnel, "envoy", GOLDEN / "envoy", tmp_path)
