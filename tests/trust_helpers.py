"""Helpers for the trust tests: temporary system-store directories for the real
update-ca-certificates, temporary NSS databases, and TLS handshakes trusting one store only."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

UPDATE_CA = shutil.which("update-ca-certificates") or (
    "/usr/sbin/update-ca-certificates" if Path("/usr/sbin/update-ca-certificates").exists() else None
)
CERTUTIL = shutil.which("certutil")


def system_dirs(root: Path) -> dict[str, str]:
    """Environment that points the Debian system store at directories under `root`.

    The conf lists one real Mozilla root (when the ca-certificates package provides one) so the
    rebuilt bundle is never empty, as on a real machine.
    """
    anchors, certs, hooks = root / "local-ca", root / "etc-ssl-certs", root / "hooks"
    for d in (anchors, certs, hooks):
        d.mkdir(parents=True)
    conf = root / "ca-certificates.conf"
    shared = Path("/usr/share/ca-certificates")
    some = sorted(shared.glob("mozilla/*.crt"))[:1] if shared.is_dir() else []
    conf.write_text("".join(f"{p.relative_to(shared)}\n" for p in some))
    return {
        "GOTUNNEL_TRUST_SYSTEM_DIR": str(anchors),
        "GOTUNNEL_TRUST_SYSTEM_BUNDLE_DIR": str(certs),
        "GOTUNNEL_TRUST_SYSTEM_CERTSCONF": str(conf),
        "GOTUNNEL_TRUST_SYSTEM_HOOKSDIR": str(hooks),
    }


def new_nss_db(directory: Path, *, owner: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {"user": owner} if owner is not None else {}
    subprocess.run(["certutil", "-N", "-d", f"sql:{directory}", "--empty-password"], check=True,
                   capture_output=True, **kwargs)
    return directory


def nss_has(directory: Path, nickname: str) -> bool:
    return subprocess.run(["certutil", "-L", "-d", f"sql:{directory}", "-n", nickname],
                          capture_output=True).returncode == 0


def nss_nicknames(directory: Path) -> list[str]:
    out = subprocess.run(["certutil", "-L", "-d", f"sql:{directory}"], capture_output=True, text=True, check=True).stdout
    return [line.rsplit(None, 1)[0].strip() for line in out.splitlines()[4:] if line.strip()]


def nss_valid_ssl_ca(directory: Path, nickname: str) -> bool:
    res = subprocess.run(["certutil", "-V", "-u", "L", "-d", f"sql:{directory}", "-n", nickname],
                         capture_output=True, text=True)
    return res.returncode == 0 and "certificate is valid" in res.stdout


def handshake_ok(port: int, name: str, *, capath: str | None = None, cafile: str | None = None) -> bool:
    """Python/OpenSSL handshake to 127.0.0.1:port for `name`, trusting only capath/cafile."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=cafile, capath=capath)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=name):
                return True
    except ssl.SSLCertVerificationError:
        return False


def fake_tool(path: Path, log: Path, script: str = "") -> Path:
    """A shell script that appends its arguments to `log` and then runs `script`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> "{log}"\n{script}\nexit 0\n')
    path.chmod(0o755)
    return path


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, _dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in files:
            os.chown(os.path.join(root, name), uid, gid)
