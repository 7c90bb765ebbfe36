"""Envoy's protobuf messages (from `xds-protos`, grpc's own build of Envoy's API).

Importing the extension modules registers their types, so `json_format.ParseDict` can resolve
every `@type` the renderer writes into an `Any`.
"""

from __future__ import annotations

from typing import Any

# Every typed_config the renderer may emit (see render.py's *_TYPE constants).
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.direct_response.v3 import config_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.http.header_formatters.preserve_case.v3 import preserve_case_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: F401

_MESSAGES: dict[str, Any] = {
    "type.googleapis.com/envoy.config.listener.v3.Listener": listener_pb2.Listener,
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": cluster_pb2.Cluster,
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": route_pb2.RouteConfiguration,
    "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration": scoped_route_pb2.ScopedRouteConfiguration,
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": secret_pb2.Secret,
}


def message_class(type_url: str) -> Any:
    return _MESSAGES[type_url]


DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaDiscoveryResponse = discovery_pb2.DeltaDiscoveryResponse
DiscoveryResource = discovery_pb2.Resource
