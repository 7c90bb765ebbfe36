"""Route table -> Caddyfile, for `gotunnel render --format caddyfile` (ops people who keep Caddyfiles).

gotunnel itself always loads the JSON form (`render.py`); this rendering serves the same sites,
certificates, pages and proxy settings, and `caddy adapt` turns it into an equivalent config.

Quoting rules (Caddyfile tokens):

* Every user-derived value is written as a backtick token (raw: no escape processing), or as a
  heredoc when it holds a backtick itself (values never hold newlines, so the marker cannot occur).
* Braces are escaped as `\\{`/`\\}` first, exactly as in the JSON form: Caddy's runtime replacer
  and the Caddyfile's shorthands (`{host}`) then leave them literal.
* `{$NAME}` is expanded from the environment while the Caddyfile is *parsed*, inside any token
  form, and no escape prevents it; a value containing `{$` is refused with an error (the JSON
  format renders it).
* File paths come from the state directory and are refused when they hold braces, controls or
  backticks.
"""

from __future__ import annotations

from gotunnel_core import dotsegments
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.lan import LOCALHOST_HOST_REGEX, LOOPBACK_CIDRS
from gotunnel_core.loops import HOP_HEADER
from gotunnel_core.models import NAME_SUFFIXES, RouteTable, Tunnel

from .render import (
    BAD_GATEWAY_REASON, EXTENDED_CONNECT_GODEBUG, PASSIVE_EJECT_SECONDS, STREAM_CLOSE_DELAY, UPSTREAM_VERSIONS,
    RenderOptions, _ordered, _sni_pattern, bad_gateway_body, caddy_literal, check_backends, check_config_path,
    duration, loop_body, not_found_body, plain_body, timeout_body, unavailable_body,
)

#: `remote_ip` ranges of loopback peers (gotunnel_core.lan).
LOOPBACK_RANGES = " ".join(LOOPBACK_CIDRS)

HEREDOC = "GOTUNNEL_EOF"


def token(value: str, indent: str = "") -> str:
    """A Caddyfile token holding exactly `value` (already placeholder-escaped where needed)."""
    if "{$" in value:
        raise EngineValidationError(
            f"cannot write {value!r} into a Caddyfile: '{{$' starts an environment variable there; "
            "use `gotunnel render --format json`"
        )
    if "\n" in value or "\r" in value:
        raise EngineValidationError(f"cannot write {value!r} into a Caddyfile: it holds a line break")
    if "`" not in value:
        return f"`{value}`"
    return f"<<{HEREDOC}\n{indent}\t{value}\n{indent}\t{HEREDOC}"


def literal(value: str, indent: str = "") -> str:
    """A token that Caddy serves verbatim: placeholders escaped, then quoted."""
    return token(caddy_literal(value), indent)


def path_token(path: str, what: str) -> str:
    check_config_path(path, what)
    if "`" in path:
        raise EngineValidationError(f"the Caddyfile format cannot hold {what} {path!r} (a backtick)")
    return token(path)


def _site_addresses(tunnel: Tunnel, scheme: str, port: int) -> str:
    return ", ".join(f"{scheme}://{tunnel.name}.{suffix}:{port}" for suffix in NAME_SUFFIXES)


def _bind(bind: str) -> str:
    return f"\tbind {bind}"


def text_block(text: str, indent: str) -> str:
    """A multi-line heredoc token holding `text` (a page); the closing marker sets the indentation."""
    if "{$" in text:
        raise EngineValidationError("cannot write a page holding '{$' into a Caddyfile")
    inner = indent + "\t"
    lines = text.split("\n")
    return f"<<{HEREDOC}\n" + "\n".join(inner + line if line else "" for line in lines) + f"\n{inner}{HEREDOC}"


def _page(status: int, body: str, indent: str = "\t", matcher: str = "") -> list[str]:
    """`respond` with an HTML page. The body is already placeholder-escaped, with our own placeholders in."""
    where = f"{matcher} " if matcher else ""
    return [
        f"{indent}header {where}Content-Type `text/html; charset=utf-8`",
        f"{indent}respond {where}{text_block(body, indent)} {status}",
    ]


def _split_page(status: int, detailed: str, indent: str = "\t") -> list[str]:
    """The detailed page for loopback peers, the plain one for the LAN (the JSON's two routes)."""
    return ([f"{indent}@local_{status} remote_ip {LOOPBACK_RANGES}"]
            + _page(status, detailed, indent, f"@local_{status}") + _page(status, plain_body(status), indent))


def _guards(tunnel: Tunnel | None, table: RouteTable) -> list[str]:
    """What every site checks first: CONNECT 405, LAN peers asking `.localhost` (and, for a
    `lan = false` tunnel, any LAN peer) 404, dot segments 400, this gotunnel's loop marker 508."""
    # not an RFC 8441 websocket's extended CONNECT, which carries `:protocol`
    lines = ["\t@connect {", "\t\tmethod CONNECT", "\t\tnot header :protocol *", "\t}", "\thandle @connect {"]
    lines += _page(405, plain_body(405), "\t\t") + ["\t}"]
    lines += ["\t@lan_localhost {", f"\t\tnot remote_ip {LOOPBACK_RANGES}",
              f"\t\tvars_regexp {{http.request.host}} {token(LOCALHOST_HOST_REGEX)}", "\t}",
              "\thandle @lan_localhost {"] + _page(404, plain_body(404), "\t\t") + ["\t}"]
    if tunnel is None:
        return lines
    if not tunnel.lan:
        lines += [f"\t@lan not remote_ip {LOOPBACK_RANGES}", "\thandle @lan {"] + _page(404, plain_body(404), "\t\t") + ["\t}"]
    lines += [f"\t@dot_segment vars_regexp {{http.request.uri}} {token(dotsegments.TARGET_REGEX)}",
              "\thandle @dot_segment {"] + _page(400, plain_body(400), "\t\t") + ["\t}"]
    lines += [f"\t@loop header {HOP_HEADER} {token(table.hop_id)}", "\thandle @loop {"]
    lines += _split_page(508, loop_body(tunnel), "\t\t") + ["\t}"]
    return lines


def _reverse_proxy(tunnel: Tunnel, via: bool, table: RouteTable) -> list[str]:
    backends = tunnel.backends
    lines = [f"\treverse_proxy {' '.join(token(b.address) for b in backends)} {{"]
    add = lines.append
    if len(backends) > 1:
        add(f"\t\tlb_policy weighted_round_robin {' '.join(str(b.weight) for b in backends)}")
        add(f"\t\tlb_retries {len(backends) - 1}")
    if tunnel.health is not None:
        check = tunnel.health
        add(f"\t\thealth_uri {token(backends[0].path + check.path)}")
        add(f"\t\thealth_interval {duration(check.interval)}")
        add(f"\t\thealth_timeout {duration(check.timeout)}")
        add(f"\t\thealth_passes {check.healthy_threshold}")
        add(f"\t\thealth_fails {check.unhealthy_threshold}")
    if len(backends) > 1 or tunnel.health is not None:
        eject = tunnel.health.interval * tunnel.health.healthy_threshold if tunnel.health else PASSIVE_EJECT_SECONDS
        add(f"\t\tfail_duration {duration(eject)}")
        add("\t\tmax_fails 1")
    add(f"\t\tstream_close_delay {duration(STREAM_CLOSE_DELAY)}")
    add("\t\theader_up X-Forwarded-Proto {scheme}")
    add("\t\theader_up X-Forwarded-Host {hostport}")
    add(f"\t\theader_up {HOP_HEADER} {token(table.hop_id)}")
    if tunnel.host_header == "backend":
        add("\t\theader_up Host {http.reverse_proxy.upstream.hostport}")
    elif tunnel.host_header != "preserve":
        add(f"\t\theader_up Host {literal(tunnel.host_header, chr(9) * 2)}")
    for name, value in tunnel.headers.request.add:
        add(f"\t\theader_up {name} {literal(value, chr(9) * 2)}")
    for name in sorted(set(tunnel.headers.request.remove) | (set() if via else {"Via"})):
        add(f"\t\theader_up -{name}")
    for name, value in tunnel.headers.response.add:
        add(f"\t\theader_down {name} {literal(value, chr(9) * 2)}")
    for name in tunnel.headers.response.remove:
        add(f"\t\theader_down -{name}")
    add("\t\ttransport http {")
    add("\t\t\tcompression off")
    add(f"\t\t\tresponse_header_timeout {duration(table.timeout_of(tunnel))}")
    add(f"\t\t\tversions {' '.join(UPSTREAM_VERSIONS[backends[0].scheme])}")
    if backends[0].scheme == "https":
        add("\t\t\ttls_insecure_skip_verify")
    add("\t\t}")
    add("\t}")
    return lines


def _tunnel_site(tunnel: Tunnel, table: RouteTable, *, https: bool, via: bool) -> list[str]:
    listen = table.listen
    port = listen.https_port if https else listen.http_port
    lines = [f"# tunnel {tunnel.name} over {'HTTPS' if https else 'HTTP'}",
             f"{_site_addresses(tunnel, 'https' if https else 'http', port)} {{", _bind(listen.bind)]
    lines += _guards(tunnel, table)
    if https:
        cert = table.certs.get(tunnel.name) or table.default_cert
        if cert is not None:
            lines.append(f"\ttls {path_token(cert.cert, 'certificate')} {path_token(cert.key, 'key')}")
        lines.append(f"\t@misdirected not vars_regexp {{http.request.tls.server_name}} {token(_sni_pattern(tunnel))}")
        lines.append("\trespond @misdirected `Misdirected Request: the TLS name does not match Host` 421 {")
        lines.append("\t\tclose")
        lines.append("\t}")
    elif tunnel.redirect_https:
        suffix = "" if listen.https_port == 443 else f":{listen.https_port}"
        lines.append(f"\tredir https://{{host}}{suffix}{{uri}} {tunnel.redirect_code}")
        lines.append("}")
        return lines
    if not via:
        lines.append("\theader -Via")
    prefix = tunnel.backends[0].path
    if prefix:
        lines.append(f"\trewrite * {token(caddy_literal(prefix) + '{uri}')}")
    lines += _reverse_proxy(tunnel, via, table)
    for status, body in ((502, bad_gateway_body(tunnel)), (503, unavailable_body(tunnel)),
                         (504, timeout_body(tunnel, table.timeout_of(tunnel)))):
        lines.append(f"\thandle_errors {status} {{")
        lines += _split_page(status, body, "\t\t")
        lines.append("\t}")
    lines.append("}")
    return lines


def _fallback_site(table: RouteTable, *, https: bool) -> list[str]:
    listen = table.listen
    port = listen.https_port if https else listen.http_port
    lines = [f"# any other host over {'HTTPS' if https else 'HTTP'}: the 404 page listing the tunnels",
             f"{'https' if https else 'http'}://:{port} {{", _bind(listen.bind)]
    default = table.default_cert
    if https and default is not None:
        lines.append(f"\ttls {path_token(default.cert, 'default certificate')} {path_token(default.key, 'default key')}")
    lines += _guards(None, table)
    lines += _split_page(404, not_found_body(table))
    lines.append("}")
    return lines


def _global(options: RenderOptions) -> list[str]:
    lines = ["{"]
    if options.admin_socket is not None:
        lines.append(f"\tadmin {token('unix/' + check_config_path(options.admin_socket, 'admin socket'))}")
    else:
        lines.append("\tadmin off")
    lines += ["\tpersist_config off", "\tauto_https off", f"\tgrace_period {duration(options.grace_period)}"]
    if options.storage_dir is not None:
        lines.append(f"\tstorage file_system {path_token(options.storage_dir, 'storage dir')}")
    lines += [
        "\tservers {",
        "\t\ttrusted_proxies static 0.0.0.0/0 ::/0",
        "\t\tprotocols h1 h2" if options.http2 else "\t\tprotocols h1",
        "\t}",
        "\tlog default {",
        "\t\toutput stderr",
        "\t\tformat json",
        f"\t\tlevel {options.log_level}",
        "\t}",
        "}",
    ]
    return lines


def render_caddyfile(table: RouteTable, options: RenderOptions | None = None) -> str:
    """The Caddyfile for `table`."""
    options = options or RenderOptions()
    tunnels = _ordered(table.tunnels)
    for tunnel in tunnels:
        check_backends(tunnel)
    blocks: list[list[str]] = [
        ["# Rendered by gotunnel (gotunnel render --format caddyfile). gotunnel loads the JSON form;",
         f"# this file is equivalent (`caddy adapt --config Caddyfile`). 502 reason: {BAD_GATEWAY_REASON}.",
         f"# Websockets over HTTP/2 (RFC 8441) need GODEBUG={EXTENDED_CONNECT_GODEBUG} in Caddy's environment."],
        _global(options),
    ]
    for https in (False, True):
        for tunnel in tunnels:
            blocks.append(_tunnel_site(tunnel, table, https=https, via=options.via))
        blocks.append(_fallback_site(table, https=https))
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"
