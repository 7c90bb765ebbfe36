"""`gotunnel render --engine caddy` (JSON and Caddyfile) matches its golden files (the kit's
`check_render_golden`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caddy_helpers import needs_caddy
from gotunnel_core.testing import Gotunnel
from gotunnel_core.testing.golden import check_render_golden

GOLDEN = Path(__file__).resolve().parent / "golden"


@needs_caddy
@pytest.mark.parametrize("fmt", [None, "caddyfile"], ids=["caddy", "caddy-caddyfile"])
def test_render_matches_golden_files(gotunnel: Gotunnel, fmt: str | None, tmp_path: Path) -> None:
    check_render_golden(gotunnel, "caddy", GOLDEN / ("caddy-caddyfile" if fmt else "caddy"), tmp_path, fmt)
