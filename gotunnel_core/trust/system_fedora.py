"""The system store of Fedora, RHEL and derivatives (p11-kit): a PEM in
/etc/pki/ca-trust/source/anchors, then `update-ca-trust extract`.

GOTUNNEL_TRUST_SYSTEM_DIR moves the anchors directory, GOTUNNEL_TRUST_SYSTEM_BUNDLE the extracted
bundle checked by `--check` (/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..fsutil import atomic_write
from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict, handshake, openssl_verify, writable

ANCHORS = "/etc/pki/ca-trust/source/anchors"
BUNDLE = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
SBIN = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")


class FedoraSystemStore(TrustStore):
    id = "system-fedora"
    group = "system"
    title = "system store (update-ca-trust)"

    @property
    def anchors(self) -> Path:
        return Path(self.env.get("GOTUNNEL_TRUST_SYSTEM_DIR", ANCHORS))

    @property
    def bundle(self) -> Path:
        return Path(self.env.get("GOTUNNEL_TRUST_SYSTEM_BUNDLE", BUNDLE))

    def _tool(self) -> str | None:
        return self.env.which("update-ca-trust", *SBIN)

    def detect(self) -> Detection:
        if self._tool() is None:
            return Detection(False, "update-ca-trust not found")
        if not self.anchors.is_dir():
            return Detection(False, f"{self.anchors} does not exist")
        return Detection(True, str(self.anchors))

    def needs_privilege(self) -> bool:
        return not writable(self.anchors) or not writable(self.bundle.parent)

    def _extract(self) -> None:
        tool = self._tool()
        if tool is None:
            raise StoreError("update-ca-trust not found")
        self.env.run([tool, "extract"], timeout=300)

    def install(self, ca: CA) -> dict[str, Any]:
        path = self.anchors / f"{ca.file_stem}.pem"
        existed = path.exists()
        try:
            atomic_write(path, ca.pem, mode=0o644)
            self._extract()
        except Exception:
            if not existed:
                path.unlink(missing_ok=True)
                try:
                    self._extract()
                except StoreError:
                    pass
            raise
        return {"file": str(path), "items": [str(path)]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        Path(record["file"]).unlink(missing_ok=True)
        self._extract()

    def check(self, ca: CA, target: Target) -> CheckResult:
        if not self.bundle.is_file():
            return CheckResult(Verdict.NOT_TRUSTED, f"{self.bundle} missing")
        if target.offline:
            if target.leaf is None:
                return CheckResult(Verdict.UNKNOWN, "no certificate to verify")
            return openssl_verify(self.env, target.leaf, cafile=str(self.bundle))
        return handshake(target, cafile=str(self.bundle))
