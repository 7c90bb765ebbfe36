"""Real names for a proxy gotunnel does not run: `hosts`, `domain_template`, `tls`, through the
real CLI (`render --for existing`), and the local CA never signing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from gotunnel_core.errors import ValidationError
from gotunnel_core.models import TlsPolicy, Tunnel, parse_domain_template, parse_public_host
from gotunnel_core.testing import Gotunnel


def make_pem_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for `name`, as a user would bring from their own CA."""
    import subprocess

    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize(("raw", "expected"), [
    ("api.example.com", "api.example.com"),
    ("*.API.Example.com.", "*.api.example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("intranet", "intranet"),
])
def test_public_hosts_are_normalised(raw: str, expected: str) -> None:
    assert parse_public_host(raw) == expected


@pytest.mark.parametrize("raw", ["", "a..b", "*.", "a.*.b", "**.a.com", "-a.com", "a-.com", "a b.com", "a\nb.com",
                                 "10.0.0.1", "a_b.com", "x" * 64 + ".com", "a." * 127 + "com", "ex\u00a0ample.com",
                                 "a;b.com", 'a"b.com', "$host.com"])
def test_bad_hosts_are_refused_naming_the_value(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_public_host(raw)
    assert repr(raw) in caught.value.message and "\n" not in caught.value.message


def test_domain_template_needs_exactly_one_name() -> None:
    assert parse_domain_template("{name}.Dev.example.com") == "{name}.dev.example.com"
    for bad in ("dev.example.com", "{name}.{name}.x", "{name}.{env}.x", "{name}..x", "{name} .x"):
        with pytest.raises(ValidationError, match="domain_template"):
            parse_domain_template(bad)


def test_tls_policies_round_trip_through_the_tunnel_model() -> None:
    for raw in ("acme", "off", {"cert": "c.pem", "key": "k.pem"}):
        tunnel = Tunnel.from_raw({"name": "api", "backends": "http://127.0.0.1:1", "hosts": ["api.example.com"], "tls": raw})
        assert Tunnel.from_raw(tunnel.to_dict()) == tunnel
        assert tunnel.tls == TlsPolicy.parse(raw)
    for bad in ("on", {"cert": "c.pem"}, {"cert": "c", "key": "k", "chain": "x"}, 3, {"cert": "a\nb", "key": "k"}):
        with pytest.raises(ValidationError, match="tls"):
            TlsPolicy.parse(bad)


def write_config(g: Gotunnel, text: str) -> Path:
    path = g.state_dir.parent / "gotunnel.toml"
    path.write_text(text)
    return path


API = '''
[[tunnels]]
name = "api"
backends = ["http://127.0.0.1:3000"]
'''


@pytest.mark.parametrize(("config", "named"), [
    (API + 'hosts = ["api..example.test"]\ntls = "off"\n', "'api..example.test'"),
    (API + 'hosts = ["api.example.test", "*.*.example.test"]\ntls = "off"\n', "'*.*.example.test'"),
    (API + 'hosts = "api.example.test"\ntls = "off"\n', "'api.example.test'"),
    (API + 'hosts = ["api.example.test"]\ntls = { cert = "missing.crt", key = "missing.key" }\n', "'missing.crt'"),
    (API + 'hosts = ["api.example.test"]\ntls = "letsencrypt"\n', "'letsencrypt'"),
    ('domain_template = "dev.example.test"\ntls = "off"\n' + API, "'dev.example.test'"),
    ('domain_template = "{name}.dev..example.test"\ntls = "off"\n' + API, "'{name}.dev..example.test'"),
    ('tls = "maybe"\n' + API + 'hosts = ["api.example.test"]\n', "'maybe'"),
    (API + 'tls = "off"\n', "'api'"),  # no names at all
    (API + 'hosts = ["api.example.test"]\n', "'api'"),  # no tls anywhere
    ('acme_ca = "http://acme.example.test/dir"\n' + API + 'hosts = ["api.example.test"]\ntls = "off"\n',
     "'http://acme.example.test/dir'"),
    ('acme_ca = "https://{env.HOME}/dir"\n' + API + 'hosts = ["api.example.test"]\ntls = "off"\n',
     "'https://{env.HOME}/dir'"),
    ('acme_ca = "https://acme.example.test/dir"\nacme_ca_root = "missing-root.pem"\n' + API
     + 'hosts = ["api.example.test"]\ntls = "acme"\n', "'missing-root.pem'"),
    ('acme_ca = "https://acme.example.test/dir"\nacme_ca_root = "gotunnel.toml"\n' + API
     + 'hosts = ["api.example.test"]\ntls = "acme"\n', "'gotunnel.toml'"),  # a file, but no certificate
    ('acme_ca_root = "gotunnel.toml"\n' + API + 'hosts = ["api.example.test"]\ntls = "acme"\n', "'gotunnel.toml'"),
    ('acme_email = "ops at example.test"\n' + API + 'hosts = ["api.example.test"]\ntls = "acme"\n',
     "'ops at example.test'"),
])
def test_bad_input_is_one_line_exit_2_through_the_cli(gotunnel: Gotunnel, config: str, named: str) -> None:
    write_config(gotunnel, config)
    result = gotunnel("render", "--engine", "nginx", "--for", "existing")
    assert result.code == 2, result
    error_lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and named in error_lines[0], result.err
    assert result.out == ""  # nothing half-rendered


def test_names_come_from_hosts_then_domain_template(gotunnel: Gotunnel, tmp_path: Path) -> None:
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    write_config(gotunnel, f'''
domain_template = "{{name}}.dev.example.test"
tls = {{ cert = "{cert}", key = "{key}" }}
[[tunnels]]
name = "api"
hosts = ["api.example.test", "*.api.example.test", "Bücher.example.test"]
backends = ["http://127.0.0.1:3000"]
[[tunnels]]
name = "web"
backends = ["http://127.0.0.1:3001"]
[[tunnels]]
name = "docs"
backends = ["http://127.0.0.1:3002"]
tls = "off"
''')
    out = gotunnel("render", "--engine", "nginx", "--for", "existing", check=True).out
    assert 'server_name api.example.test "~^[^.]+\\.api\\.example\\.test$" xn--bcher-kva.example.test;' in out
    assert "server_name web.dev.example.test;" in out and "server_name docs.dev.example.test;" in out
    assert out.count(f'ssl_certificate "{cert}";') == 2  # api and web; docs has TLS off
    assert ".localhost" not in out and ".local;" not in out


def test_relative_certificate_paths_are_from_the_config_file(gotunnel: Gotunnel) -> None:
    certs = gotunnel.state_dir.parent / "certs"
    certs.mkdir()
    make_pem_pair(certs, "api.example.test")
    config = write_config(gotunnel, API + 'hosts = ["api.example.test"]\n'
                          'tls = { cert = "certs/api.example.test.crt", key = "certs/api.example.test.key" }\n')
    out = gotunnel("--config", str(config), "render", "--engine", "nginx", "--for", "existing", cwd=Path("/"), check=True).out
    assert f'ssl_certificate "{certs}/api.example.test.crt";' in out


def test_local_ca_never_signs_the_real_names(gotunnel: Gotunnel, tmp_path: Path) -> None:
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    write_config(gotunnel, API + f'hosts = ["api.example.test", "api.example.com"]\ntls = {{ cert = "{cert}", key = "{key}" }}\n')
    # Rendering for an existing proxy does not even create the state directory (no CA, no leaf).
    gotunnel("render", "--engine", "nginx", "--for", "existing", check=True)
    assert not gotunnel.state_dir.exists()
    # gotunnel's own engine issues the tunnel's leaf: only its .localhost/.local names.
    gotunnel("render", "--engine", "nginx", "--out", str(tmp_path / "out"), check=True)
    pems = [p for p in gotunnel.state_dir.rglob("*") if p.is_file() and p.read_bytes().startswith(b"-----BEGIN CERTIFICATE")]
    assert pems
    names: set[str] = set()
    for pem in pems:
        for certificate in x509.load_pem_x509_certificates(pem.read_bytes()):
            try:
                names |= set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                             .value.get_values_for_type(x509.DNSName))
            except x509.ExtensionNotFound:
                pass
    assert "api.localhost" in names
    assert not {n for n in names if "example" in n}, names
    assert "api.example" not in (tmp_path / "out" / "nginx.conf").read_text()


@pytest.mark.parametrize("engine", ["nginx", "envoy"])
def test_engines_without_acme_refuse_it_even_with_an_acme_server_set(gotunnel: Gotunnel, engine: str) -> None:
    write_config(gotunnel, 'acme_ca = "https://acme.example.test/dir"\nacme_email = "ops@example.test"\n'
                 + API + 'hosts = ["api.example.test"]\ntls = "acme"\n')
    result = gotunnel("render", "--engine", engine, "--for", "existing")
    assert result.code == 2 and result.out == "", result
    (error,) = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert "'api'" in error and 'tls = "acme"' in error, result.err
