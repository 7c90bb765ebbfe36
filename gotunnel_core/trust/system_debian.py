"""The system store of Debian, Ubuntu and derivatives: a `.crt` in /usr/local/share/ca-certificates,
then `update-ca-certificates`, which links it into /etc/ssl/certs, rehashes and rebuilds the bundle.

Locations can be moved for tests (the real tool then runs entirely inside temporary directories):
GOTUNNEL_TRUST_SYSTEM_DIR (the .crt directory), GOTUNNEL_TRUST_SYSTEM_BUNDLE_DIR (/etc/ssl/certs),
GOTUNNEL_TRUST_SYSTEM_CERTSCONF (/etc/ca-certificates.conf), GOTUNNEL_TRUST_SYSTEM_HOOKSDIR
(/etc/ca-certificates/update.d).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..fsutil import atomic_write
from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict, handshake, openssl_verify, writable

DEFAULTS = {
    "anchors": "/usr/local/share/ca-certificates",
    "bundle_dir": "/etc/ssl/certs",
    "certsconf": "/etc/ca-certificates.conf",
    "hooksdir": "/etc/ca-certificates/update.d",
}
ENV = {
    "anchors": "GOTUNNEL_TRUST_SYSTEM_DIR",
    "bundle_dir": "GOTUNNEL_TRUST_SYSTEM_BUNDLE_DIR",
    "certsconf": "GOTUNNEL_TRUST_SYSTEM_CERTSCONF",
    "hooksdir": "GOTUNNEL_TRUST_SYSTEM_HOOKSDIR",
}
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class DebianSystemStore(TrustStore):
    id = "system-debian"
    group = "system"
    title = "system store (update-ca-certificates)"

    def loc(self, key: str) -> Path:
        return Path(self.env.get(ENV[key], DEFAULTS[key]))

    def _tool(self) -> str | None:
        return self.env.which("update-ca-certificates", *SBIN)

    def detect(self) -> Detection:
        if self._tool() is None:
            return Detection(False, "update-ca-certificates not found")
        if not self.loc("bundle_dir").is_dir():
            return Detection(False, f"{self.loc('bundle_dir')} does not exist")
        return Detection(True, f"{self.loc('anchors')} -> {self.loc('bundle_dir')}")

    def needs_privilege(self) -> bool:
        return not (writable(self.loc("anchors")) and writable(self.loc("bundle_dir")))

    def _update(self, *extra: str) -> None:
        tool = self._tool()
        if tool is None:
            raise StoreError("update-ca-certificates not found")
        argv = [tool, *extra]
        flags = {"anchors": "--localcertsdir", "bundle_dir": "--etccertsdir", "certsconf": "--certsconf",
                 "hooksdir": "--hooksdir"}
        for key, flag in flags.items():
            if str(self.loc(key)) != DEFAULTS[key]:  # only the flags we need: older versions lack some
                argv += [flag, str(self.loc(key))]
        self.env.run(argv, timeout=300)

    def _file(self, ca: CA) -> Path:
        return self.loc("anchors") / f"{ca.file_stem}.crt"

    def install(self, ca: CA) -> dict[str, Any]:
        path = self._file(ca)
        existed = path.exists()
        anchors = self.loc("anchors")
        made_dir = not anchors.exists()
        try:
            if made_dir:
                anchors.mkdir(mode=0o755, parents=True)
            atomic_write(path, ca.pem, mode=0o644)
            self._update()
            link = self.loc("bundle_dir") / f"{ca.file_stem}.pem"
            if not link.exists():
                raise StoreError(f"update-ca-certificates ran but {link} was not created")
        except Exception:
            if not existed:  # roll back: take our file out again and rebuild
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                try:
                    self._update("--fresh")
                except StoreError:
                    pass
                if made_dir:
                    try:
                        anchors.rmdir()
                    except OSError:
                        pass
            raise
        body = "".join(ca.pem.decode().split("-----")[2].split())[:64]  # a slice of the base64, to spot it in the bundle
        return {"file": str(path), "link": str(self.loc("bundle_dir") / f"{ca.file_stem}.pem"), "pem_body": body,
                "bundle_dir": str(self.loc("bundle_dir")), "items": [str(path)]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        path = Path(record["file"])
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        # --fresh drops the links into the local directory (and dangling ones) and rehashes;
        # without it the hash link of a removed certificate would be left behind.
        self._update("--fresh")
        link = Path(record.get("link", ""))
        if record.get("link") and os.path.lexists(link):
            raise StoreError(f"update-ca-certificates left {link} behind")
        bundle = Path(record.get("bundle_dir", self.loc("bundle_dir"))) / "ca-certificates.crt"
        body = record.get("pem_body")
        if body and bundle.is_file() and body in bundle.read_text(errors="replace"):
            raise StoreError(f"{bundle} still contains the CA after update-ca-certificates")

    def check(self, ca: CA, target: Target) -> CheckResult:
        bundle_dir = self.loc("bundle_dir")
        if target.offline:
            if target.leaf is None:
                return CheckResult(Verdict.UNKNOWN, "no certificate to verify")
            return openssl_verify(self.env, target.leaf, capath=str(bundle_dir))
        return handshake(target, capath=str(bundle_dir))
