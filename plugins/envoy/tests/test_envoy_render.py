"""The Envoy renderer: golden files, Envoy's own validator, and injection-proofing (hypothesis)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from envoy_helpers import envoy_validate, needs_envoy, sample_table
from gotunnel_core.errors import ValidationError
from gotunnel_core.models import Tunnel

render = pytest.importorskip("gotunnel_envoy.render")

GOLDEN = Path(__file__).parent / "golden" / "envoy-sample"  # golden/envoy: the CLI golden test
OPTIONS = render.EnvoyOptions(work_dir=Path("/state/engines/envoy"), admin_socket="/state/engines/envoy/run/admin.sock")


def test_golden_render() -> None:
    """The rendered files for a table using every feature; GOTUNNEL_UPDATE_GOLDEN=1 rewrites them."""
    files = render.render_files(sample_table(), OPTIONS)
    files["validate.json"] = render.dumps(render.static_bootstrap(sample_table(), OPTIONS))
    if os.environ.get("GOTUNNEL_UPDATE_GOLDEN") == "1":
        for old in GOLDEN.rglob("*.json"):
            old.unlink()
        for name, content in files.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(content)
    stored = {str(p.relative_to(GOLDEN)): p.read_text() for p in GOLDEN.rglob("*.json")}
    assert sorted(stored) == sorted(files)
    for name, content in files.items():
        assert content == stored[name], f"{name} differs from the golden file (GOTUNNEL_UPDATE_GOLDEN=1 to accept)"


def test_render_is_pure_and_versions_follow_content() -> None:
    one = render.render_files(sample_table(), OPTIONS)
    assert one == render.render_files(sample_table(), OPTIONS)
    changed = sample_table(tunnels=[{"name": "web", "backends": ["http://127.0.0.1:3001"]}])
    two = render.render_files(changed, OPTIONS)
    version = lambda files, name: json.loads(files[name])["version_info"]  # noqa: E731
    assert version(one, "cds.json") != version(two, "cds.json")
    same = sample_table(tunnels=[{"name": "web", "backends": ["http://127.0.0.1:3000"]}])
    assert version(render.render_files(same, OPTIONS), "rds/tls.json") != version(one, "rds/tls.json")  # others gone
    assert render.render_files(same, OPTIONS)["bootstrap.json"] == one["bootstrap.json"]


def test_bootstrap_admin_is_never_public_and_resources_are_watched_files() -> None:
    boot = json.loads(render.render_files(sample_table(), OPTIONS)["bootstrap.json"])
    assert boot["admin"]["address"] == {"pipe": {"path": "/state/engines/envoy/run/admin.sock", "mode": 0o600}}
    tcp = render.bootstrap(render.EnvoyOptions(work_dir=Path("/w"), admin_socket=None))
    assert tcp["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    for key in ("lds_config", "cds_config"):
        source = boot["dynamic_resources"][key]["path_config_source"]
        assert source["path"].startswith("/state/engines/envoy/current/")
        assert source["watched_directory"]["path"] == "/state/engines/envoy"


def test_filter_chains_by_sni_and_circuit_breakers_raised() -> None:
    lds = json.loads(render.render_files(sample_table(), OPTIONS)["lds.json"])
    https = [listener for listener in lds["resources"] if listener["name"].startswith("https_")][0]
    names = {c["name"]: c["filter_chain_match"]["server_names"] for c in https["filter_chains"]
             if "server_names" in c.get("filter_chain_match", {})}
    assert names["tls_web"] == ["web.localhost", "web.local"]
    assert names["tls__wild.preview"] == ["*.preview.localhost", "*.preview.local"]
    assert "tls_plain" not in names  # https = false
    assert https["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert names["tls_web_lan"] == names["tls_web"]  # the LAN peers' twin (plain pages, `.local` only)
    assert https["default_filter_chain"]["name"] == "tls_default_lan"  # loopback peers match `tls_default`
    cds = json.loads(render.render_files(sample_table(), OPTIONS)["cds.json"])
    for c in cds["resources"]:
        for threshold in c["circuit_breakers"]["thresholds"]:
            assert threshold["max_connections"] >= 1_000_000 and threshold["max_requests"] >= 1_000_000
    api = [c for c in cds["resources"] if c["name"] == "tunnel_api"][0]
    weights = [e["load_balancing_weight"] for e in api["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert weights == [3, 1] and api["lb_policy"] == "ROUND_ROBIN"
    assert api["health_checks"][0]["http_health_check"]["path"] == "/v2/health"
    assert "outlier_detection" in api


def test_percent_in_header_values_is_escaped_for_envoys_formatter() -> None:
    assert render.escape_format("100% %DOWNSTREAM_REMOTE_ADDRESS%") == "100%% %%DOWNSTREAM_REMOTE_ADDRESS%%"
    rds = json.loads(render.render_files(sample_table(), OPTIONS)["rds/http.json"])
    api = [v for v in rds["resources"][0]["virtual_hosts"] if v["name"] == "tunnel_api"][0]
    redirect = [r["redirect"] for r in api["routes"] if "redirect" in r]  # after the guard routes (400, 508)
    assert redirect == [{"https_redirect": True, "port_redirect": 8443, "response_code": "TEMPORARY_REDIRECT"}]
    tls = json.loads(render.render_files(sample_table(), OPTIONS)["rds/tls.json"])
    route = [r for r in [v for v in tls["resources"][0]["virtual_hosts"] if v["name"] == "tunnel_api"][0]["routes"]
             if "route" in r][0]
    adds = {h["header"]["key"]: h["header"]["value"] for h in route["request_headers_to_add"]}
    assert adds["X-Pct"] == "100%% %%DOWNSTREAM_REMOTE_ADDRESS%%"
    assert route["route"]["prefix_rewrite"] == "/v2/"


def test_what_envoy_cannot_do_is_refused_with_the_tunnel_named() -> None:
    with pytest.raises(ValidationError, match="Host"):  # refused by the model for every engine (issue 19)
        Tunnel.from_raw({"name": "h", "backends": "http://127.0.0.1:1", "headers": {"request": {"add": {"Host": "x"}}}})
    mixed = {"name": "m", "backends": ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]}
    with pytest.raises(ValidationError, match="one path prefix"):
        render.render_files(sample_table(tunnels=[mixed]), OPTIONS)


def test_http2_downstream_and_upstream_protocols() -> None:
    tunnels = [{"name": "h1", "backends": ["http://127.0.0.1:1"]}, {"name": "tls", "backends": ["https://localhost:2"]},
               {"name": "grpc", "backends": ["h2c://127.0.0.1:3"], "health": {"path": "/h"}}]
    on = render.render_documents(sample_table(tunnels=tunnels), OPTIONS)
    chain = [x for x in on["lds.json"]["resources"] if x["name"].startswith("https_")][0]["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    assert chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert hcm["codec_type"] == "AUTO" and hcm["http2_protocol_options"] == {"allow_connect": True}
    clusters = {c["name"]: c for c in on["cds.json"]["resources"]}
    proto = {name: c["typed_extension_protocol_options"][render.UPSTREAM_HTTP_KEY] for name, c in clusters.items()}
    assert "http_protocol_options" in proto["tunnel_h1"]["explicit_http_config"]
    assert proto["tunnel_grpc"]["explicit_http_config"] == {"http2_protocol_options": {}}  # h2c: prior knowledge
    assert clusters["tunnel_grpc"]["health_checks"][0]["http_health_check"]["codec_client_type"] == "HTTP2"
    assert set(proto["tunnel_tls"]["auto_config"]) == {"http_protocol_options", "http2_protocol_options"}  # ALPN
    assert "http_protocol_options" in proto["tunnel_tls_h1"]["explicit_http_config"]  # the websockets' twin
    off = render.render_documents(sample_table(tunnels=tunnels), render.EnvoyOptions(work_dir=Path("/w"), http2=False))
    chain = [x for x in off["lds.json"]["resources"] if x["name"].startswith("https_")][0]["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    assert chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    assert hcm["codec_type"] == "HTTP1" and "http2_protocol_options" not in hcm


def test_websockets_inside_http2_get_a_key_and_https_websockets_the_http11_twin() -> None:
    tunnels = [{"name": "h1", "backends": ["http://127.0.0.1:1"]}, {"name": "tls", "backends": ["https://localhost:2"]}]
    rds = render.render_documents(sample_table(tunnels=tunnels), OPTIONS)["rds/tls.json"]["resources"][0]
    # Each tunnel's guard routes (dot segments, loops: direct responses) come first.
    routes = {v["name"]: [r for r in v["routes"] if "route" in r] for v in rds["virtual_hosts"]}
    rfc8441, main = routes["tunnel_h1"]
    headers = {h["name"]: h for h in rfc8441["match"]["headers"]}
    assert headers["upgrade"]["string_match"] == {"exact": "websocket", "ignore_case": True}
    assert headers["sec-websocket-key"] == {"name": "sec-websocket-key", "present_match": True, "invert_match": True}
    adds = {h["header"]["key"]: (h["header"]["value"], h["append_action"]) for h in rfc8441["request_headers_to_add"]}
    assert adds["Sec-WebSocket-Key"] == (render.RFC8441_WEBSOCKET_KEY, "ADD_IF_ABSENT")
    import base64

    assert len(base64.b64decode(render.RFC8441_WEBSOCKET_KEY)) == 16  # what RFC 6455 servers check
    assert rfc8441["response_headers_to_remove"] == ["Sec-WebSocket-Accept"]
    assert "headers" not in main["match"] and main["route"]["cluster"] == rfc8441["route"]["cluster"] == "tunnel_h1"
    assert main["request_headers_to_remove"] == ["te"]  # hop-by-hop towards HTTP/1.1 only
    tls_routes = routes["tunnel_tls"]
    assert [r["route"]["cluster"] for r in tls_routes] == ["tunnel_tls_h1", "tunnel_tls_h1", "tunnel_tls"]
    assert "request_headers_to_remove" not in tls_routes[-1]  # gRPC over HTTP/2 keeps `te: trailers`


@needs_envoy
def test_envoy_validates_the_rendered_config(tmp_path: Path) -> None:
    from gotunnel_core.testing.engines import make_pki

    pki = make_pki(tmp_path / "pki", ["web", "api", "*.preview", "secure"])
    table = sample_table(certs=pki.certs, default=pki.default)
    config = tmp_path / "validate.json"
    config.write_text(render.dumps(render.static_bootstrap(table, OPTIONS)))
    result = envoy_validate(config)
    assert result.returncode == 0, result.stdout + result.stderr


# ----- injection: whatever the models accept renders into a config Envoy accepts, literally ----------

_header_name = st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,40}\Z")
_header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(lambda s: s.strip(" "))
_path = st.lists(st.from_regex(r"\A(?:[A-Za-z0-9\-_~!&()*+,=:@]|%[0-9A-F]{2}){1,12}\Z"), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts))
_label = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z")


@pytest.fixture(scope="module")
def shared_pki(tmp_path_factory: pytest.TempPathFactory):
    from gotunnel_core.testing.engines import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"), ["any"])


@needs_envoy
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    name=st.tuples(st.booleans(), st.lists(_label, min_size=1, max_size=3)),
    req_add=st.dictionaries(_header_name, _header_value, max_size=3),
    req_remove=st.lists(_header_name, max_size=2),
    resp_add=st.dictionaries(_header_name, _header_value, max_size=3),
    prefix=st.one_of(st.just(""), _path),
    health=st.one_of(st.none(), _path),
    scheme=st.sampled_from(["http", "https", "h2c"]),  # h2c and https add HTTP/2 clusters and websocket routes
)
@example(name=(False, ["a"]), req_add={"X-A": "%REQ(:path)% 100%"}, req_remove=["Connection"],
         resp_add={"Host": "x"}, prefix="/p%41", health="/h", scheme="http")  # Host: refused by the renderer, not by Envoy
@example(name=(True, ["w"]), req_add={"Transfer-Encoding": "x", "Content-Length": "1"}, req_remove=["X-Forwarded-For"],
         resp_add={"Connection": "close"}, prefix="", health=None, scheme="http")
@example(name=(True, ["w"]), req_add={"Sec-WebSocket-Key": "%x%"}, req_remove=["Upgrade"],
         resp_add={"Sec-WebSocket-Accept": "y"}, prefix="/g", health="/h", scheme="https")
def test_hypothesis_injection(tmp_path_factory: pytest.TempPathFactory, shared_pki, name, req_add, req_remove, resp_add,
                              prefix, health, scheme) -> None:
    wildcard, labels = name
    raw = {
        "name": ("*." if wildcard else "") + ".".join(labels),
        "backends": [f"{scheme}://127.0.0.1:3000{prefix}"],
        "headers": {"request": {"add": req_add, "remove": req_remove}, "response": {"add": resp_add}},
    }
    if health is not None:
        raw["health"] = {"path": health}
    try:
        tunnel = Tunnel.from_raw(raw)
    except ValidationError:
        return  # the models refuse it: nothing reaches Envoy
    table = sample_table(tunnels=[tunnel.to_dict()], certs={tunnel.name: shared_pki.certs["any"]},
                         default=shared_pki.default)
    try:
        files = render.render_files(table, OPTIONS)
    except ValidationError as exc:
        assert "envoy engine" in exc.reason  # a documented refusal, never a crash
        return
    # Structure: every user value is exactly one JSON string, escaped for Envoy's formatter.
    routes = json.loads(files["rds/http.json"])["resources"][0]["virtual_hosts"][0]["routes"]
    for route in routes:
        if "route" not in route:  # the guard routes and the 404: direct responses
            continue
        theirs = route["request_headers_to_add"][1:1 + len(tunnel.headers.request.add)]
        adds = {h["header"]["key"]: h["header"]["value"] for h in theirs}
        assert adds == {k: v.replace("%", "%%") for k, v in tunnel.headers.request.add}
    for value in adds.values():  # no formatter command survives: every % is doubled
        assert value.replace("%%", "") .count("%") == 0
    work = tmp_path_factory.mktemp("inject")
    config = work / "validate.json"
    config.write_text(render.dumps(render.static_bootstrap(table, OPTIONS)))
    result = envoy_validate(config)
    assert result.returncode == 0, (raw, result.stdout + result.stderr)
