"""A real browser: headless Chromium (Debian's `chromium`) with HOME in a temporary directory loads
https://NAME.localhost:PORT/ through the builtin engine: a certificate error before
`gotunnel trust`, the backend's page after it (Chromium on Linux trusts ~/.pki/nssdb)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def load(url: str, home: Path, profile: Path) -> tuple[str, str]:
    """(DOM, stderr) of one headless page load; the browser's process group is killed by its pid."""
    argv = [CHROMIUM, "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--dump-dom", url]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish loading {url}: {err[-2000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers (zygote, utility processes) left behind
        except ProcessLookupError:
            pass
    return out, err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil (libnss3-tools) not installed")
def test_chromium_trusts_the_tunnel_after_gotunnel_trust(gotunnel: Gotunnel, echo_backend: Any,
                                                         tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    gotunnel.env["HOME"] = str(home)
    backend = echo_backend("browser-backend")
    gotunnel("start", "-d", "browse", "-p", str(backend.port), check=True)
    seen = len(backend.hits)  # `start` asked the backend once whether it accepts the tunnel's Host
    url = f"https://browse.localhost:{gotunnel.https_port}/from-chromium"

    dom, err = load(url, home, tmp_path / "profile-before")
    assert "ERR_CERT_AUTHORITY_INVALID" in err, err[-2000:]
    assert "browser-backend" not in dom
    assert len(backend.hits) == seen

    result = gotunnel("trust", "--store", "nss")
    assert result.code == 0, result.err
    assert (home / ".pki" / "nssdb" / "cert9.db").is_file()  # created for the installed Chromium

    dom, err = load(url, home, tmp_path / "profile-after")
    assert "ERR_CERT" not in err, err[-2000:]
    assert '"backend": "browser-backend"' in dom and '"path": "/from-chromium"' in dom, dom[:2000]
    assert backend.hits[seen] == "/from-chromium"  # (then perhaps /favicon.ico)

    gotunnel("trust", "--uninstall", check=True)
    dom, err = load(url, home, tmp_path / "profile-removed")
    assert "ERR_CERT_AUTHORITY_INVALID" in err
    assert json.loads((gotunnel.state_dir / "trust.json").read_text())["stores"] == {}
