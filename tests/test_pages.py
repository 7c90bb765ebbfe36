"""The engine-neutral pages: a 404 listing can be bounded for engines that serve pages from a buffer."""

from gotunnel_core import pages
from gotunnel_core.models import Listen, Tunnel


def test_not_found_page_lists_at_most_max_listed_tunnels_by_name() -> None:
    tunnels = [Tunnel.from_raw({"name": f"t{i:02d}", "backends": "http://127.0.0.1:3000"}) for i in range(12)]
    full = pages.not_found_page("x.localhost", list(reversed(tunnels)), Listen())
    assert all(f"<code>t{i:02d}</code>" in full for i in range(12)) and "more" not in full
    short = pages.not_found_page("x.localhost", list(reversed(tunnels)), Listen(), max_listed=3)
    assert [f"<code>t{i:02d}</code>" in short for i in range(12)] == [True] * 3 + [False] * 9  # first by name
    assert "... and 9 more" in short and len(short) < len(full)
    assert pages.not_found_page("x.localhost", tunnels, Listen(), max_listed=12) == full
