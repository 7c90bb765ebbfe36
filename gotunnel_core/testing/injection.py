"""Property tests for config-rendering engines: no string can break out of the config.

Every tunnel field that reaches an engine's config gets arbitrary text (quotes, backslashes, `$`,
`%`, `;`, braces, `#`, spaces, controls, non-ASCII) and values shaped like valid ones. Either the
models refuse it (a `ValidationError` naming the field and why) or the engine's own validator
accepts the rendered config. An engine's test calls, for each field in `FIELDS`:

    check_refused_or_valid(field, lambda tunnel: asyncio.run(engine.validate(table_for(tunnel))))

and may add its own checks that accepted values come out of the real program verbatim.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ..engine import EngineValidationError
from ..errors import ValidationError
from ..models import Tunnel

#: Text with everything that matters to config parsers and to HTTP.
NASTY = st.text(alphabet=st.sampled_from(list("aZ09-._~/:@%*$;{}#\"'\\ \t\r\n\x00\x7fé€!&()+,=?[]<>`|^")) | st.characters(),
                max_size=80)
TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=30)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
PATHISH = st.text(alphabet=list("/abc019-._~!&()*+,=:@%$;{}#\"'\\ "), max_size=40).map(lambda v: "/" + v)
#: Paths of plain unreserved characters: most PATHISH draws are refused, and a run must also
#: draw enough accepted values for the "accepted" branch whatever the seed.
CLEAN_PATH = st.text(alphabet=list("/abc019-._~"), max_size=40).map(lambda v: "/" + v)
HOSTNAME = st.from_regex(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
#: Per field: values shaped like valid ones, so the "accepted" branch is hit too.
SHAPED: dict[str, Any] = {
    "name": HOSTNAME,
    "backend url": st.builds(lambda s, h, p, path: f"{s}://{h}:{p}{path}", st.sampled_from(["http", "https", "h2c"]),
                             st.sampled_from(["127.0.0.1", "localhost", "[::1]"]), st.integers(0, 70000),
                             PATHISH | CLEAN_PATH),
    "backend path prefix": PATHISH | CLEAN_PATH,
    "backend weight": st.integers(-5, 2000).map(str),
    "health path": PATHISH | CLEAN_PATH,
    "request header name (add)": TOKEN,
    "request header value": PRINTABLE,
    "request header name (remove)": TOKEN,
    "response header name (add)": TOKEN,
    "response header value": PRINTABLE,
    "response header name (remove)": TOKEN,
    "host": HOSTNAME,
}
#: Header values the models accept (printable ASCII, no outer spaces), for verbatim checks.
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60).filter(
    lambda v: v == v.strip(" ") and bool(v.strip()))


#: Backend schemes: each may render differently (nginx: `http` proxy_* directives, `h2c` grpc_* ones,
#: `https` both), so every field is tried under each.
SCHEMES = ("http", "https", "h2c")


def base_tunnel(scheme: str = "http") -> dict[str, Any]:
    """A tunnel using every option, as the raw table a config file gives, with `scheme` backends."""
    return {
        "name": "app",
        "backends": [{"url": f"{scheme}://127.0.0.1:3000", "weight": 2}, f"{scheme}://127.0.0.1:3001"],
        "health": {"path": "/health", "interval": 1, "timeout": 1, "healthy_threshold": 1, "unhealthy_threshold": 2},
        "headers": {"request": {"add": {"X-A": "1"}, "remove": ["X-B"]},
                    "response": {"add": {"X-C": "3"}, "remove": ["X-D"]}},
    }


def _set(key: str) -> Callable[[dict[str, Any], str], None]:
    def setter(t: dict[str, Any], v: str) -> None:
        t[key] = v
    return setter


def _headers(direction: str, op: str, key: str | None = None) -> Callable[[dict[str, Any], str], None]:
    def setter(t: dict[str, Any], v: str) -> None:
        rules = t["headers"][direction]
        if op == "remove":
            rules["remove"] = [v]
        elif key is None:
            rules["add"][v] = "x"
        else:
            rules["add"][key] = v
    return setter


#: Field -> how it is set in `base_tunnel()`.
FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "name": _set("name"),
    "backend url": lambda t, v: t.update(backends=[v]),
    "backend path prefix": lambda t, v: t.update(backends=[t["backends"][0]["url"] + v]),
    "backend weight": lambda t, v: t.update(backends=[{"url": t["backends"][0]["url"], "weight": v}]),
    "health path": lambda t, v: t["health"].update(path=v),
    "request header name (add)": _headers("request", "add"),
    "request header value": _headers("request", "add", "X-A"),
    "request header name (remove)": _headers("request", "remove"),
    "response header name (add)": _headers("response", "add"),
    "response header value": _headers("response", "add", "X-C"),
    "response header name (remove)": _headers("response", "remove"),
}
#: The fields of output for a proxy gotunnel does not run (`render --for existing`): the tunnel's
#: fields plus its real names (`hosts`).
EXISTING_FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    **FIELDS,
    "host": lambda t, v: t.update(hosts=[v]),
}


#: Explicit examples on top of the drawn ones, so both branches (refused by the models, accepted and
#: checked by the engine's validator) are exercised whatever the seed: refused for every field...
REFUSED_EVERYWHERE = ("\n", "\x00", "a\r\nb", "\t", "\x7f")
#: ...and accepted, per field.
ACCEPTED: dict[str, tuple[str, ...]] = {
    "name": ("app", "a-b", "x1", "web.dev", "*.preview"),
    "backend url": ("http://127.0.0.1:3000", "https://localhost:443", "h2c://[::1]:50051", "http://localhost:1/a",
                    "h2c://127.0.0.1:65535/b-c"),
    "backend path prefix": ("/a", "/b/c", "/x-y", "/1", "/a_b"),
    "backend weight": ("1", "2", "500", "1000", "7"),
    "health path": ("/h", "/health", "/a/b", "/x_y", "/z"),
    "request header name (add)": ("X-A", "X-B1", "Y", "Z-9", "T"),
    "request header value": ("a", "b c", "$x", "{y}", 'q"'),
    "request header name (remove)": ("X-A", "X-B1", "Y", "Z-9", "T"),
    "response header name (add)": ("X-A", "X-B1", "Y", "Z-9", "T"),
    "response header value": ("a", "b c", "$x", "{y}", 'q"'),
    "response header name (remove)": ("X-A", "X-B1", "Y", "Z-9", "T"),
    "host": ("api.example.test", "*.a.example.test", "intranet", "a-b.example", "xn--bcher-kva.example"),
}


#: Values a drawn example once found to break an engine, kept as explicit examples on every engine:
#: `//:A` as a path was accepted by the models and refused by `caddy validate` (read as host "",
#: port "A"); the models now refuse a path starting with "//".
FOUND: dict[str, tuple[str, ...]] = {
    "backend path prefix": ("//:A", "//h/x"),
    "health path": ("//:A", "//h/x"),
}


def check_refused_or_valid(field: str, validate: Callable[[Tunnel], None], examples: int = 60,
                           fields: dict[str, Callable[[dict[str, Any], str], None]] = FIELDS) -> dict[str, int]:
    """Arbitrary text in `field` (a key of `fields`: `FIELDS`, or `EXISTING_FIELDS` for output for
    an existing proxy): the models refuse it, or `validate` (the engine's validator on a table with
    that tunnel) accepts it, under each backend scheme. Both branches must be exercised; returns
    the counts."""
    import pytest

    outcomes = {"refused": 0, "validated": 0}

    def check(value: str, scheme: str) -> None:
        raw = base_tunnel(scheme)
        fields[field](raw, value)
        try:
            tunnel = Tunnel.from_raw(raw)
        except ValidationError as exc:
            assert exc.message.startswith("invalid ") and exc.reason  # refused, saying which field and why
            outcomes["refused"] += 1
            return
        outcomes["validated"] += 1
        try:
            validate(tunnel)
        except EngineValidationError as exc:
            pytest.fail(f"{field} = {value!r} was accepted by the model but the engine's validator refused it: {exc.message}")

    run = given(value=NASTY | SHAPED[field], scheme=st.sampled_from(SCHEMES))(check)
    for i, value in enumerate((*REFUSED_EVERYWHERE, *ACCEPTED[field], *FOUND.get(field, ()))):
        run = example(value=value, scheme=SCHEMES[i % len(SCHEMES)])(run)
    settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])(run)()
    assert outcomes["validated"] >= 5 and outcomes["refused"] >= 5, outcomes  # both branches exercised
    return outcomes


__all__ = ["ACCEPTED", "EXISTING_FIELDS", "FIELDS", "HEADER_VALUE", "NASTY", "REFUSED_EVERYWHERE", "SCHEMES", "SHAPED", "base_tunnel",
           "check_refused_or_valid"]
