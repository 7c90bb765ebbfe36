"""The dashboard's route on the engine: `gotunnel.localhost` on the HTTP and HTTPS ports, on every engine.

The daemon adds one internal tunnel to the route table it hands the engine (never persisted, never
announced, never listed as a user's): name `gotunnel`, `lan = false`, backend the dashboard's own
loopback listener. Engines do nothing special for it: `.localhost` names and `lan = false` tunnels
already answer loopback peers only on every engine, which is what keeps LAN peers out.
"""

from __future__ import annotations

from ..engine import Capability
from ..errors import ValidationError
from ..models import Backend, Listen, Tunnel

#: The tunnel name the dashboard takes; `gotunnel start -d gotunnel` is refused.
DASHBOARD_NAME = "gotunnel"
DASHBOARD_HOST = f"{DASHBOARD_NAME}.localhost"
RESERVED_NAMES: frozenset[str] = frozenset({DASHBOARD_NAME})
#: The conformance row (and capability key) of this route: an engine declaring it unsupported or
#: pending (it cannot keep LAN peers off `lan = false` routes) is not given the route at all.
DASHBOARD_ROW = "dashboard"


def refuse_reserved(name: str) -> str:
    """`name` (already normalised by `parse_tunnel_name`), or a one-line error when gotunnel keeps it."""
    if name in RESERVED_NAMES:
        raise ValidationError("tunnel name", name, f"is reserved: https://{DASHBOARD_HOST}/ is gotunnel's dashboard",
                              hint="choose another name with -d NAME")
    return name


def engine_routes_dashboard(declared: Capability) -> bool:
    """Whether an engine gets the route, from how it declares the `dashboard` row: not when it says
    it cannot do it (unsupported) or does not yet (pending), i.e. LAN peers might reach it."""
    return declared.kind in ("supported", "variant")


def dashboard_tunnel(port: int) -> Tunnel:
    """The internal route to the dashboard listening on 127.0.0.1:`port`: loopback peers only."""
    return Tunnel(name=DASHBOARD_NAME, backends=(Backend.parse(f"http://127.0.0.1:{port}"),), https=True, lan=False)


def _origin(scheme: str, port: int) -> str:
    return f"{scheme}://{DASHBOARD_HOST}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")


def engine_url(listen: Listen) -> str:
    """`https://gotunnel.localhost[:https_port]/`: where the engine serves the dashboard."""
    return _origin("https", listen.https_port) + "/"


def engine_hosts(listen: Listen) -> frozenset[str]:
    """The Host values a request through the engine carries: our name, bare or with either port."""
    return frozenset({DASHBOARD_HOST, f"{DASHBOARD_HOST}:{listen.http_port}", f"{DASHBOARD_HOST}:{listen.https_port}"})


def engine_origins(listen: Listen) -> frozenset[str]:
    """The Origins of the dashboard's own page served through the engine (HTTPS or plain HTTP)."""
    return frozenset({_origin("https", listen.https_port), _origin("http", listen.http_port),
                      f"https://{DASHBOARD_HOST}:{listen.https_port}", f"http://{DASHBOARD_HOST}:{listen.http_port}"})
