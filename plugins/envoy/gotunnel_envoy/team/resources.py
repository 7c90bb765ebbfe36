"""The team's xDS resources, built by the same functions that render the file-based config.

`render.py` builds listeners, clusters and route configurations as dicts; here they are fed
the team's routes (from etcd) and turned into protobuf messages (`json_format.ParseDict`, the
exact JSON mapping Envoy itself reads files with). Every resource's version is a hash of its
deterministic serialisation, so every hub computes the same versions for the same state and an
edge that fails over to another hub receives nothing it already has.

What is shared by every edge: per published name a cluster, a route configuration (RDS) and
the scope naming it (SRDS: the HTTPS connection manager picks the route configuration by the
Host's leading labels, `api.alice`); and the CERT_BUCKETS edge certificates (SDS), picked by
SNI. What depends on the edge (its ports, in its node metadata): the two listeners and the
HTTP-to-HTTPS redirect. The listeners never change as users come and go: a new name costs
three small resources (and, for a new user, one bucket certificate), whatever the team's size.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from gotunnel_core.models import Backend, Listen, RouteTable, Tunnel
from gotunnel_core.team.identity import Team
from gotunnel_core.team.store import EdgeCert, Route

from .. import render
from . import protos
from .templating import TemplateCache

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SCOPED = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
#: Push order: what is named before what names it (clusters and secrets, then the listeners,
#: the scopes, the route configurations).
ORDER = (CLUSTER, SECRET, LISTENER, SCOPED, ROUTE)
#: The scoped-routes configuration of the HTTPS connection manager.
SCOPES = "team"
#: The team CA, a static secret in every edge's bootstrap (from its member directory), which
#: the clusters to agents validate against.
TEAM_CA_SECRET = "gotunnel_team_ca"


#: Encoded resources above this size are kept zlib-compressed (see `Resource`).
PACK_ABOVE = 512
#: Per type, the first resource packed serves as the zlib dictionary of all later ones: the
#: resources of one type (one per name) share most of their bytes, pages included.
_DICTIONARIES: dict[str, bytes] = {}


@dataclass(frozen=True)
class Resource:
    """A resource, its version, and `wire`: a DeltaDiscoveryResponse holding only this resource,
    serialised once. Protobuf merges concatenated messages and appends repeated fields, so a
    response to any edge is its small header followed by these bytes: a listener of megabytes
    is encoded once per version, not once per edge.

    Memory, measured at 10,000 names: only the wire bytes are kept (the body decodes from them
    on demand; a second copy cost about 80 MiB), and those of more than PACK_ABOVE bytes are
    zlib-compressed against a dictionary of their type (a name's route configuration, 7.4 KB,
    mostly its pages, to a few hundred bytes); unpacking costs microseconds per edge sent to."""

    name: str
    version: str
    packed: bytes
    dictionary: bytes | None = None  # None: `packed` is the wire itself

    @property
    def wire(self) -> bytes:
        if self.dictionary is None:
            return self.packed
        return zlib.decompressobj(zdict=self.dictionary).decompress(self.packed)

    @property
    def body(self) -> any_pb2.Any:
        """The resource itself (tests and tools; the hub sends `wire`)."""
        return protos.DeltaDiscoveryResponse.FromString(self.wire).resources[0].resource

    @classmethod
    def of(cls, name: str, version: str, body: any_pb2.Any) -> "Resource":
        wire = protos.DeltaDiscoveryResponse(
            resources=[protos.DiscoveryResource(name=name, version=version, resource=body)]).SerializeToString()
        if len(wire) <= PACK_ABOVE:
            return cls(name, version, wire)
        dictionary = _DICTIONARIES.setdefault(body.type_url, wire)
        packer = zlib.compressobj(1, zdict=dictionary)
        return cls(name, version, packer.compress(wire) + packer.flush(), dictionary)


#: Per-name resources share their shape (see `templating`): parsed once, then copied.
_TEMPLATES = TemplateCache()


def to_resource(type_url: str, doc: Mapping[str, Any], varying: Sequence[str] = ()) -> Resource:
    """A rendered dict as a typed protobuf resource with its content version. `varying`: the
    strings that differ between resources of one shape (a name, its backend), for the cache."""
    body_doc = {k: v for k, v in doc.items() if k != "@type"}
    message: Message
    if varying:
        message = _TEMPLATES.build(protos.message_class(type_url), body_doc, varying)
    else:
        message = protos.message_class(type_url)()
        json_format.ParseDict(body_doc, message)
    raw = message.SerializeToString(deterministic=True)
    body = any_pb2.Any(type_url=type_url, value=raw)
    return Resource.of(doc["name"], hashlib.sha256(raw).hexdigest()[:16], body)


def _slug(group: str) -> str:
    return group.replace("*", "_wild")


def secret_name(group: str) -> str:
    return f"edge_{_slug(group)}"


def route_name(group: str) -> str:
    return f"tls_{_slug(group)}"


def _options(team: Team, routes: Iterable[Route] = ()) -> render.EnvoyOptions:
    return render.EnvoyOptions(
        work_dir=Path("/nonexistent"), suffixes=(team.domain,), ads=True, list_tunnels_on_404=False,
        upstream_hosts={team.local_part(r.fqdn): r.host for r in routes},
        scoped_routes=(SCOPES, team.scope_labels),
    )


def tunnel_of(team: Team, route: Route) -> Tunnel:
    """A published name as the Tunnel the renderer knows: `api.alice` under the team domain,
    proxied to the agent's engine (which expects its own Host, set by `upstream_hosts`).

    An agent's TLS listener is rendered as a plain HTTP/1.1 backend (what it forwards to) and
    `cluster` adds the TLS: the renderer's https backends are unverified local dev servers."""
    backend = route.backend.replace("https://", "http://", 1)
    return Tunnel(name=team.local_part(route.fqdn), backends=(Backend.parse(backend),))


def agent_tls(team: Team, user: str) -> dict[str, Any]:
    """The edge-to-agent hop: TLS with the agent's member name as SNI, its certificate checked
    against the team CA (the edge's static `TEAM_CA_SECRET`) for exactly that name, so agent A
    (or a LAN peer holding A's address) can never answer for agent B's names."""
    name = team.agent_name(user)
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": render.UPSTREAM_TLS_TYPE, "sni": name,
        "common_tls_context": {"alpn_protocols": ["http/1.1"], "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": name}}]},
            "validation_context_sds_secret_config": {"name": TEAM_CA_SECRET}}}}}


def _varying(team: Team, route: Route) -> tuple[str, ...]:
    """The strings of a name's resources that differ from another name's of the same shape."""
    backend = Backend.parse(route.backend)
    return (route.fqdn, team.local_part(route.fqdn), route.host, backend.host, backend.address, backend.url, route.owner,
            route.user)


def cluster(team: Team, route: Route) -> Resource:
    """A name's cluster; over TLS to the agent's listener unless it published plain HTTP."""
    doc = render.cluster(tunnel_of(team, route), _options(team))
    if route.backend.startswith("https://"):
        doc["transport_socket"] = agent_tls(team, route.user)
    return to_resource(CLUSTER, doc, _varying(team, route))


def name_routes(team: Team, route: Route) -> Resource:
    """The route configuration of one published name (the renderer's, with its pages)."""
    tunnels = (tunnel_of(team, route),)
    doc = render.route_config(route_name(route.fqdn), RouteTable(Listen(), tunnels), tunnels, plain_http=False,
                              options=_options(team, [route]))
    return to_resource(ROUTE, doc, _varying(team, route))


def scope_name(fqdn: str) -> str:
    return f"scope_{fqdn}"


def scope(team: Team, fqdn: str) -> Resource:
    """The scope sending the Host `fqdn` to its route configuration."""
    return to_resource(SCOPED, {"name": scope_name(fqdn), "route_configuration_name": route_name(fqdn),
                                "key": {"fragments": [{"string_key": label} for label in team.scope_key(fqdn)]}})


def secret(cert: EdgeCert) -> Resource:
    return to_resource(SECRET, {"name": secret_name(cert.group), "tls_certificate": {
        "certificate_chain": {"inline_string": cert.cert}, "private_key": {"inline_string": cert.key}}})


def redirect_routes(listen: Listen) -> Resource:
    """Plain HTTP on a team edge only redirects to HTTPS (one route for every name, so a new
    name never changes it)."""
    redirect: dict[str, Any] = {"https_redirect": True, "response_code": "PERMANENT_REDIRECT"}
    if listen.https_port != 443:
        redirect["port_redirect"] = listen.https_port
    return to_resource(ROUTE, {"name": f"http_redirect_{listen.https_port}", "virtual_hosts": [
        {"name": "https", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "redirect": redirect}]}]})


def listeners(team: Team, listen: Listen) -> list[Resource]:
    """The HTTP listener (redirects) and the HTTPS listener: one chain for every name, its
    certificates the CERT_BUCKETS SDS secrets (picked by SNI), its routes scoped by user."""
    from gotunnel_core.team.edgecerts import bucket_key
    from gotunnel_core.team.identity import CERT_BUCKETS

    options = _options(team)
    secrets = [secret_name(bucket_key(b)) for b in range(CERT_BUCKETS)]
    chain = render.tls_chain("team", [], render.sds_downstream_tls(*secrets), options, "")
    return [to_resource(LISTENER, render.http_listener(listen, options, f"http_redirect_{listen.https_port}")),
            to_resource(LISTENER, render.https_listener(listen, [chain], None))]
