"""The macOS System keychain: `security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain`.

Detected by the `security` tool and the keychain file (not by the OS name). Needs root. Not
exercised by the test suite on Linux; its commands are checked against a fake `security`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict

KEYCHAIN = "/Library/Keychains/System.keychain"


class MacOSStore(TrustStore):
    id = "macos"
    title = "macOS System keychain"

    @property
    def keychain(self) -> Path:
        return Path(self.env.get("GOTUNNEL_TRUST_MACOS_KEYCHAIN", KEYCHAIN))

    def _tool(self) -> str | None:
        return self.env.which("security", "/usr/bin")

    def detect(self) -> Detection:
        if self._tool() is None or not self.keychain.exists():
            return Detection(False, f"no `security` tool or no {self.keychain}")
        return Detection(True, str(self.keychain))

    def needs_privilege(self) -> bool:
        return os.geteuid() != 0 and not os.access(self.keychain, os.W_OK)

    def _security(self, *args: str, check: bool = True) -> Any:
        tool = self._tool()
        if tool is None:
            raise StoreError("`security` not found")
        return self.env.run([tool, *args], check=check)

    def install(self, ca: CA) -> dict[str, Any]:
        self._security("add-trusted-cert", "-d", "-r", "trustRoot", "-k", str(self.keychain), str(ca.path))
        return {"keychain": str(self.keychain), "sha1": ca.sha1, "pem": ca.pem.decode(), "items": [f"{self.keychain} {ca.sha1}"]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".pem") as fh:
            fh.write(record["pem"])
            fh.flush()
            self._security("remove-trusted-cert", "-d", fh.name, check=False)
        result = self._security("delete-certificate", "-Z", record["sha1"], record["keychain"], check=False)
        if result.returncode != 0 and "could not be found" not in (result.stderr + result.stdout):
            raise StoreError(f"security delete-certificate failed: {result.stderr.strip()}")

    def check(self, ca: CA, target: Target) -> CheckResult:
        if target.leaf is None:
            return CheckResult(Verdict.UNKNOWN, "no certificate to verify")
        result = self._security("verify-cert", "-c", str(target.leaf), "-p", "ssl", "-s", target.server_name,
                                check=False)
        if result.returncode == 0:
            return CheckResult(Verdict.TRUSTED, "security verify-cert: ok")
        return CheckResult(Verdict.NOT_TRUSTED, f"security verify-cert: {(result.stderr or result.stdout).strip()[-200:]}")
