"""`gotunnel render --engine builtin` matches its golden file (the kit's `check_render_golden`)."""

from __future__ import annotations

from pathlib import Path

from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.golden import check_render_golden

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_render_matches_golden_files(gotunnel: Gotunnel, tmp_path: Path) -> None:
    check_render_golden(gotunnel, "builtin", GOLDEN / "builtin", tmp_path)
