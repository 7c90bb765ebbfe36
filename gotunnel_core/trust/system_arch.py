"""The system store of Arch Linux and others with p11-kit's `trust` tool: `trust anchor --store`.

`--check` verifies against the extracted bundle (/etc/ssl/certs/ca-certificates.crt, moved by
GOTUNNEL_TRUST_SYSTEM_BUNDLE). Only used when neither update-ca-certificates nor update-ca-trust
manages the system store (they come first in the registry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict, handshake, openssl_verify, writable

TRUST_SOURCE = "/etc/ca-certificates/trust-source"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ArchSystemStore(TrustStore):
    id = "system-arch"
    group = "system"
    title = "system store (p11-kit trust anchor)"

    @property
    def source(self) -> Path:
        return Path(self.env.get("GOTUNNEL_TRUST_SYSTEM_DIR", TRUST_SOURCE))

    @property
    def bundle(self) -> Path:
        return Path(self.env.get("GOTUNNEL_TRUST_SYSTEM_BUNDLE", BUNDLE))

    def _tool(self) -> str | None:
        return self.env.which("trust", "/usr/bin")

    def detect(self) -> Detection:
        if self._tool() is None:
            return Detection(False, "p11-kit `trust` not found")
        if not self.source.is_dir():
            return Detection(False, f"{self.source} does not exist")
        return Detection(True, str(self.source))

    def needs_privilege(self) -> bool:
        return not writable(self.source)

    def install(self, ca: CA) -> dict[str, Any]:
        tool = self._tool()
        if tool is None:
            raise StoreError("p11-kit `trust` not found")
        # `trust anchor --store` is one step (it writes the anchor and re-extracts), so a failure leaves nothing.
        self.env.run([tool, "anchor", "--store", str(ca.path)], timeout=300)
        return {"ca_path": str(ca.path), "pem": ca.pem.decode(), "items": [f"anchor {ca.short}"]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        tool = self._tool()
        if tool is None:
            raise StoreError("p11-kit `trust` not found")
        # `--remove` takes the certificate itself; the record keeps a copy in case the CA was replaced.
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".pem") as fh:
            fh.write(record["pem"])
            fh.flush()
            self.env.run([tool, "anchor", "--remove", fh.name], timeout=300)

    def check(self, ca: CA, target: Target) -> CheckResult:
        if not self.bundle.is_file():
            return CheckResult(Verdict.NOT_TRUSTED, f"{self.bundle} missing")
        if target.offline:
            if target.leaf is None:
                return CheckResult(Verdict.UNKNOWN, "no certificate to verify")
            return openssl_verify(self.env, target.leaf, cafile=str(self.bundle))
        return handshake(target, cafile=str(self.bundle))
