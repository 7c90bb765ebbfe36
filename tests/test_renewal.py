"""Certificate renewal in a running daemon: the clock of the certificate code is moved forward
(GOTUNNEL_CLOCK_OFFSET_FILE, a testing aid), the daemon renews, the builtin engine serves the
new certificate to new handshakes, and a keep-alive connection opened before goes on working."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gotunnel_core.testing import Gotunnel, wait_for


class KeepAlive:
    """One HTTPS keep-alive connection to the tunnel, verified against gotunnel's CA at start."""

    def __init__(self, port: int, name: str, ca: str) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        self.host = f"{name}.localhost"
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.sock = ctx.wrap_socket(raw, server_hostname=self.host)
        self.sock = self.conn.sock

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        self.conn.request("GET", path, headers={"Host": self.host})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def serial(self) -> int:
        return x509.load_der_x509_certificate(self.sock.getpeercert(binary_form=True)).serial_number


def served_cert(port: int, name: str) -> x509.Certificate:
    """The certificate a new handshake gets (not verified: after the clock moved it is not valid *yet*)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=f"{name}.localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture
def offset_file(gotunnel: Gotunnel, tmp_path: Path) -> Path:
    path = tmp_path / "clock-offset-days"
    path.write_text("0\n")
    gotunnel.env["GOTUNNEL_CLOCK_OFFSET_FILE"] = str(path)
    return path


def _start(gotunnel: Gotunnel, echo_backend: Any, name: str) -> tuple[KeepAlive, int]:
    backend = echo_backend()
    gotunnel("start", "-d", name, "-p", str(backend.port), check=True)
    ca = gotunnel("cert", "ca", "--path", check=True).out.strip()
    keep = KeepAlive(gotunnel.https_port, name, ca)
    status, echo = keep.get("/before")
    assert status == 200 and echo["path"] == "/before"
    old = keep.serial()
    assert served_cert(gotunnel.https_port, name).serial_number == old
    return keep, old


def _assert_renewed(gotunnel: Gotunnel, keep: KeepAlive, name: str, old: int, days: int) -> None:
    new = served_cert(gotunnel.https_port, name)
    assert new.serial_number != old
    moved_now = datetime.now(timezone.utc) + timedelta(days=days)
    assert new.not_valid_after_utc > moved_now + timedelta(days=80)  # a fresh 90-day certificate
    listed = {c["name"]: c for c in gotunnel.json("status")["certificates"]}
    assert int(listed[name]["serial"], 16) == new.serial_number
    # The connection opened before the renewal still works, still on its old session.
    status, echo = keep.get("/after")
    assert status == 200 and echo["path"] == "/after"
    assert keep.serial() == old


def test_cert_renew_goes_through_the_daemon_and_keeps_connections(
    gotunnel: Gotunnel, echo_backend: Any, offset_file: Path
) -> None:
    keep, old = _start(gotunnel, echo_backend, "renewme")
    dashboard_old = served_cert(gotunnel.https_port, "gotunnel").serial_number  # https://gotunnel.localhost
    # Nothing is due yet: the daemon renews nothing.
    assert "nothing to renew" in gotunnel("cert", "renew", check=True).out
    assert served_cert(gotunnel.https_port, "renewme").serial_number == old
    offset_file.write_text("70\n")  # 20 days before expiry: inside the 30-day renewal window
    result = gotunnel("cert", "renew", check=True)
    assert "renewed renewme" in result.out and "gotunnel" not in result.out  # the daemon's route is not a tunnel
    _assert_renewed(gotunnel, keep, "renewme", old, 70)
    assert served_cert(gotunnel.https_port, "gotunnel").serial_number != dashboard_old


def test_daemon_renews_by_itself_when_the_clock_jumps(
    gotunnel: Gotunnel, echo_backend: Any, offset_file: Path
) -> None:
    """A jump of the wall clock (what a laptop sees after sleeping) makes the daemon check at once."""
    keep, old = _start(gotunnel, echo_backend, "sleeper")
    offset_file.write_text("75\n")
    wait_for(lambda: served_cert(gotunnel.https_port, "sleeper").serial_number != old, timeout=40, interval=0.5,
             what="the daemon to renew after the clock jump")
    _assert_renewed(gotunnel, keep, "sleeper", old, 75)
    log = (gotunnel.state_dir / "daemon.log").read_text()
    assert "wall clock jumped ahead" in log


def test_expired_certificates_are_renewed_at_daemon_start(
    gotunnel: Gotunnel, echo_backend: Any, offset_file: Path
) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "late", "-p", str(backend.port), check=True)
    old = served_cert(gotunnel.https_port, "late").serial_number
    gotunnel.stop_daemon()
    offset_file.write_text("100\n")  # past notAfter: the stored certificate is expired
    assert [t["name"] for t in gotunnel.json("list")["tunnels"]] == ["late"]  # restores the daemon
    new = served_cert(gotunnel.https_port, "late")
    assert new.serial_number != old
    assert new.not_valid_before_utc > datetime.now(timezone.utc) + timedelta(days=99)
