"""The engine-neutral pages escape everything they interpolate."""

from gotunnel_core import pages
from gotunnel_core.models import Backend, Listen, Tunnel


def test_pages_escape_and_name_things():
    t = Tunnel.from_raw({"name": "app", "backends": "http://127.0.0.1:3000"})
    page = pages.not_found_page("<x>&\"", [t], Listen("127.0.0.1", 80, 443))
    assert "&lt;x&gt;&amp;&quot;" in page and "<x>" not in page
    assert "https://app.localhost" in page and "http://app.local" in page and ":443" not in page
    empty = pages.not_found_page("a", [], Listen())
    assert "No tunnels are active" in empty
    bad = pages.bad_gateway_page("app<", "http://127.0.0.1:1", "refused <now>")
    assert "app&lt;" in bad and "http://127.0.0.1:1" in bad and "refused &lt;now&gt;" in bad
    un = pages.unavailable_page("app", [Backend.parse("http://127.0.0.1:3000"), "http://x<:1"])
    assert "http://127.0.0.1:3000" in un and "http://x&lt;:1" in un and "503" in un


def test_local_responses_carry_a_date():
    from email.utils import parsedate_to_datetime

    from gotunnel_builtin_proxy.responses import simple_response

    head = simple_response(404, b"x").split(b"\r\n")
    date = [h for h in head if h.startswith(b"Date: ")][0][6:].decode()
    assert parsedate_to_datetime(date).tzinfo is not None
