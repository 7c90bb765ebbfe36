"""The `gotunnel_request` hook, called the same way for HTTP/1.1 requests and HTTP/2 streams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gotunnel_core.http import HookRequest, HookResponse

if TYPE_CHECKING:
    from .state import ProxyState

#: Framing headers a plugin's answer may not set: the proxy frames the answer itself.
FRAMING = (b"content-length", b"transfer-encoding", b"connection")


@dataclass(slots=True)
class HookOutcome:
    """What the plugins decided: an answer, a failure (answer 500), or the (possibly edited) request."""

    response: HookResponse | None = None
    failed: bool = False
    path: bytes = b""
    headers: list[tuple[bytes, bytes]] | None = None

    def answer_headers(self) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The answer's headers without framing ones, and whether it set a Content-Type."""
        assert self.response is not None
        hdrs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.response.headers]
        has_ct = any(n.lower() == b"content-type" for n, _ in hdrs)
        return [(n, v) for n, v in hdrs if n.lower() not in FRAMING], has_ct


def run_request_hook(st: "ProxyState", method: bytes, path: bytes, headers: list[tuple[bytes, bytes]],
                     tunnel: str, client: tuple[str, int], scheme: str) -> HookOutcome:
    """Call `gotunnel_request`; a faulty plugin (exception, invalid path or header) yields `failed`."""
    hreq = HookRequest(
        method=method.decode("latin-1"),
        path=path.decode("latin-1"),
        headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
        tunnel=tunnel,
        client=client,
        scheme=scheme,
    )
    try:
        result: Any = st.hook.gotunnel_request(request=hreq)
        new_path = hreq.path.encode("latin-1")
        new_headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in hreq.headers]
        if not new_path.startswith(b"/") or any(c in new_path for c in b" \r\n"):
            raise ValueError(f"plugin set an invalid path {hreq.path!r}")
        for n, v in new_headers:
            if any(c in n for c in b" :\r\n") or b"\r" in v or b"\n" in v:
                raise ValueError(f"plugin set an invalid header {n!r}")
    except Exception as exc:  # a faulty plugin must not take the proxy down
        if st.log is not None:
            st.log.warning("gotunnel_request hook failed", error=repr(exc))
        return HookOutcome(failed=True)
    if isinstance(result, HookResponse):
        return HookOutcome(response=result)
    return HookOutcome(path=new_path, headers=new_headers)
