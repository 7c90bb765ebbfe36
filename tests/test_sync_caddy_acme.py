"""`tls = "acme"` end to end: `gotunnel sync --engine caddy` points a running Caddy at a private
ACME server (Debian's Pebble, Let's Encrypt's test server) through the `acme_ca`, `acme_ca_root`
and `acme_email` settings, and Caddy obtains a certificate from it that a client trusting only
Pebble's issuing root accepts, then routes to the backend over it.

Pebble runs with `PEBBLE_VA_ALWAYS_VALID=1`: it skips challenge validation, so no DNS and no port
80 is needed; everything else (account, order, finalize, download) is real ACME traffic on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.request import urlopen

import pytest
from test_sync_caddy import SystemCaddy
from test_sync_nginx import answers_from, get_echo

from gotunnel_core.testing import Gotunnel, free_port, stop_pid, wait_for

PEBBLE = shutil.which("pebble")
pytestmark = pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed (Debian package pebble; CI installs it)")
HOST = "api.example.test"


class Pebble:
    """Pebble on free loopback ports, serving its directory and management API over HTTPS with a
    certificate the test makes (the Debian package ships no test certificates)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.port, self.management = free_port(), free_port()
        # Self-signed for 127.0.0.1: the certificate is its own CA, the file acme_ca_root names.
        self.https_ca, key = root / "pebble-https.crt", root / "pebble-https.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(self.https_ca), "-days", "2", "-subj", "/CN=pebble test server",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
        conf = root / "pebble-config.json"
        conf.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(self.https_ca), "privateKey": str(key),
            "httpPort": free_port(), "tlsPort": free_port(),  # unused: validation is skipped
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.log = root / "pebble.log"
        env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1"}
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen([str(PEBBLE), "-config", str(conf)], env=env, cwd=root,
                                         stdout=sink, stderr=subprocess.STDOUT)
        self.tls = ssl.create_default_context(cafile=str(self.https_ca))
        try:
            wait_for(self.directory_answers, timeout=15, what="Pebble to serve its ACME directory")
        except AssertionError:
            self.stop()
            raise AssertionError(f"Pebble did not start; its log: {self.log.read_text()[-2000:]}") from None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def directory_answers(self) -> bool:
        try:
            with urlopen(self.directory, timeout=5, context=self.tls) as answer:
                return "newOrder" in json.loads(answer.read())
        except (OSError, ValueError):
            return False

    def issuing_root(self) -> str:
        """The root Pebble made at start (`/roots/0` of its management API), PEM."""
        with urlopen(f"https://127.0.0.1:{self.management}/roots/0", timeout=5, context=self.tls) as answer:
            return str(answer.read().decode())

    def certificate_status(self, serial_hex: str) -> dict[str, Any]:
        """What Pebble's management API says of the certificate with this serial (it issued it, or 404)."""
        serial = format(int(serial_hex, 16), "x")
        with urlopen(f"https://127.0.0.1:{self.management}/cert-status-by-serial/{serial}", timeout=5,
                     context=self.tls) as answer:
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)


def pebble_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pebble"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["shared-http-listener", "own-http-listener"])
def acme_caddy(request: pytest.FixtureRequest, gotunnel: Gotunnel, tmp_path: Path) -> Iterator[SystemCaddy]:
    """The host's Caddy, its http_port/https_port (where it answers ACME challenges) the test's free
    ports, never :80/:443. Its own HTTP site listens on gotunnel's HTTP port (gotunnel's routes join
    that server) or on another port (gotunnel's HTTP server is added, on a port that is not Caddy's
    http_port, which automatic HTTPS must leave plain HTTP)."""
    site_port = gotunnel.http_port if request.param == "shared-http-listener" else free_port()
    caddy = SystemCaddy(tmp_path / "etc-caddy", site_port, https_port=gotunnel.https_port)
    try:
        yield caddy
    finally:
        caddy.stop()


def presented_certificate(port: int, root: Path) -> dict[str, Any] | None:
    """The certificate Caddy presents for HOST (`getpeercert()`), if it verifies against `root` only."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            return dict(tls.getpeercert() or {})
    except (OSError, ssl.SSLError):
        return None  # no certificate yet (Caddy fails the handshake) or not one from Pebble


def issuer_name(cert: dict[str, Any]) -> str:
    return next((value for rdn in cert["issuer"] for key, value in rdn if key == "commonName"), "")


def test_caddy_gets_a_certificate_from_the_acme_server_the_settings_name(
        gotunnel: Gotunnel, pebble: Pebble, acme_caddy: SystemCaddy, echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend("api")
    gotunnel.state_dir.parent.joinpath("gotunnel.toml").write_text(f'''
acme_ca = "{pebble.directory}"
acme_ca_root = "{pebble.https_ca}"
acme_email = "ops@example.test"

[[tunnels]]
name = "api"
hosts = ["{HOST}"]
backends = ["{backend.url}"]
tls = "acme"
''')
    root = tmp_path / "pebble-issuing-root.pem"
    root.write_text(pebble.issuing_root())
    # Before the sync nothing serves HOST with a certificate from Pebble.
    assert presented_certificate(gotunnel.https_port, root) is None

    out = tmp_path / "gotunnel.caddy.json"
    gotunnel("sync", "--engine", "caddy", "--out", str(out), "--main-config", str(acme_caddy.conf), check=True)
    synced = time.monotonic()
    (policy,) = json.loads(out.read_text())["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == [HOST] and policy["issuers"] == [{
        "module": "acme", "ca": pebble.directory, "trusted_roots_pem_files": [str(pebble.https_ca)],
        "email": "ops@example.test"}]

    seen: list[dict[str, Any] | None] = []

    def pebble_certificate() -> bool:
        seen.append(presented_certificate(gotunnel.https_port, root))
        return seen[-1] is not None

    try:
        wait_for(pebble_certificate, timeout=60, interval=0.05, what="Caddy to present a certificate issued by Pebble")
    except AssertionError:
        raise AssertionError(f"no Pebble certificate; caddy log tail: {acme_caddy.log.read_text()[-3000:]}\n"
                             f"pebble log tail: {pebble.log.read_text()[-2000:]}") from None
    first_certificate = time.monotonic() - synced
    cert = seen[-1]
    assert cert is not None and issuer_name(cert).startswith("Pebble Intermediate CA")
    assert cert["subjectAltName"] == (("DNS", HOST),)
    # This Pebble issued it (not some other CA whose root happens to match): it knows the serial.
    status = pebble.certificate_status(cert["serialNumber"])
    assert status["Status"] == "Valid", status
    print(f"pebble {pebble_version()}: first certificate {first_certificate:.2f} s after sync")

    code, _, echo = get_echo(gotunnel.https_port, HOST, ca=root)
    assert code == 200 and echo["backend"] == "api"
    assert answers_from(gotunnel.http_port, HOST, "api")  # plain HTTP stays plain HTTP
    assert acme_caddy.unrelated_answers()
