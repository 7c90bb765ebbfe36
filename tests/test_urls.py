"""`gotunnel url`, `open` and `qr` through the real CLI and daemon. The QR code printed in the
terminal is turned back into an image and decoded by zbar (Debian zbar-tools), so the test checks
what a phone's camera would read; the LAN (.local) one runs in a network namespace with mDNS on."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel
from test_mdns_daemon import netns_pair, ns_gotunnel, procs  # noqa: F401 - fixtures of the namespace test

#: segno's compact terminal output: each character is two modules, top and bottom (True = dark).
_HALVES = {"█": (False, False), " ": (True, True), "▀": (False, True), "▄": (True, False)}


def decode_terminal_qr(text: str, tmp_path: Path) -> str:
    """The text encoded by a QR code printed with half-block characters, read by `zbarimg`."""
    lines = [line for line in text.splitlines() if line and set(line) <= set(_HALVES)]
    rows: list[list[bool]] = []
    for line in lines:
        pairs = [_HALVES[ch] for ch in line]
        rows += [[top for top, _ in pairs], [bottom for _, bottom in pairs]]
    scale = 6
    width, height = len(rows[0]) * scale, len(rows) * scale
    pixels = bytearray()
    for row in rows:
        line = b"".join((b"\x00" if dark else b"\xff") * scale for dark in row)
        pixels += line * scale
    image = tmp_path / "qr.pgm"
    image.write_bytes(b"P5\n%d %d\n255\n" % (width, height) + bytes(pixels))
    proc = subprocess.run(["zbarimg", "--quiet", "--raw", str(image)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


needs_zbar = pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbarimg missing (Debian: zbar-tools)")


@pytest.fixture
def tunnel(gotunnel: Gotunnel, echo_backend: Any) -> Gotunnel:
    backend = echo_backend()
    gotunnel("start", "-d", "shop", "-p", str(backend.port), check=True)
    gotunnel("start", "-d", "plain", "-p", str(backend.port), "--no-https", check=True)
    return gotunnel


def test_url_prints_one_url_for_scripts(tunnel: Gotunnel) -> None:
    g = tunnel
    assert g("url", "shop", check=True).out == f"https://shop.localhost:{g.https_port}\n"
    assert g("url", "Shop.localhost", "--http", check=True).out == f"http://shop.localhost:{g.http_port}\n"
    assert g("url", "plain", "--http", check=True).out == f"http://plain.localhost:{g.http_port}\n"
    result = g("url", "plain")
    assert result.code == 1 and "serves no https:// URL" in result.err and "--http" in result.err
    result = g("url", "shop", "--lan")
    assert result.code == 1 and "no .local URL: mDNS is off" in result.err
    result = g("url", "nope")
    assert result.code == 1 and result.err.startswith("error: no tunnel named 'nope'; running: plain, shop")
    result = g("url", "a;b")
    assert result.code == 2 and result.err.startswith("error: invalid tunnel name 'a;b'")


def test_url_without_a_daemon(gotunnel: Gotunnel) -> None:
    result = gotunnel("url", "shop")
    assert result.code == 1 and "no gotunnel daemon is running" in result.err
    assert gotunnel.daemon_pid() is None


def test_open_hands_the_url_to_the_browser(tunnel: Gotunnel, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    result = tunnel("open", "shop", extra_env={"BROWSER": str(browser), "DISPLAY": ""})
    assert result.code == 0, result.err
    assert opened.read_text() == f"https://shop.localhost:{tunnel.https_port}\n"


@needs_zbar
def test_qr_encodes_the_url(tunnel: Gotunnel, tmp_path: Path) -> None:
    result = tunnel("qr", "shop", "--localhost", check=True)
    url = f"https://shop.localhost:{tunnel.https_port}"
    assert decode_terminal_qr(result.out, tmp_path) == url
    assert result.out.rstrip().endswith(url)
    refused = tunnel("qr", "shop")  # the LAN URL, but mDNS is off here
    assert refused.code == 1 and "mDNS is off" in refused.err


@needs_zbar
@pytest.mark.root
def test_qr_shows_the_lan_url_announced_over_mdns(tmp_path: Path, ns_gotunnel: Any) -> None:
    assert ns_gotunnel("start", "-d", "phone", "-p", "9").returncode == 0
    result = ns_gotunnel("qr", "phone")
    assert result.returncode == 0, result.stderr
    assert decode_terminal_qr(result.stdout, tmp_path) == "https://phone.local:18443"

