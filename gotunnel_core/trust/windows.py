"""The Windows certificate store, current user's Root (`certutil -addstore -user Root`), natively or
from WSL through the Windows side's certutil.exe (the Linux `certutil` is NSS's, never used here).

Detected by finding certutil.exe: /mnt/c/Windows/System32/certutil.exe under WSL (moved by
GOTUNNEL_TRUST_WINDOWS_CERTUTIL), certutil.exe on PATH on Windows. Not exercised by the test suite
on Linux; its commands are checked against a fake certutil.exe.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict

WSL_CERTUTIL = "/mnt/c/Windows/System32/certutil.exe"


class WindowsStore(TrustStore):
    id = "windows"
    title = "Windows certificate store (current user Root)"

    def _tool(self) -> str | None:
        configured = self.env.environ.get("GOTUNNEL_TRUST_WINDOWS_CERTUTIL")
        if configured:
            return configured if Path(configured).is_file() else None
        if os.name == "nt":
            return shutil.which("certutil.exe")
        return WSL_CERTUTIL if Path(WSL_CERTUTIL).is_file() else None

    def detect(self) -> Detection:
        tool = self._tool()
        return Detection(True, tool) if tool else Detection(False, "no certutil.exe (not Windows or WSL)")

    def _win_path(self, path: Path) -> str:
        """A path certutil.exe can open: as is on Windows, through `wslpath -w` under WSL."""
        if os.name == "nt":
            return str(path)
        wslpath = self.env.which("wslpath")
        if wslpath is None:
            return str(path)
        return self.env.run([wslpath, "-w", str(path)]).stdout.strip()

    def _certutil(self, *args: str, check: bool = True) -> Any:
        tool = self._tool()
        if tool is None:
            raise StoreError("certutil.exe not found")
        return self.env.run([tool, *args], check=check)

    def install(self, ca: CA) -> dict[str, Any]:
        self._certutil("-addstore", "-user", "-f", "Root", self._win_path(ca.path))
        serial = f"{ca.serial:x}"
        return {"serial": serial, "sha1": ca.sha1, "items": [f"CurrentUser\\Root {ca.sha1}"]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        result = self._certutil("-delstore", "-user", "Root", record["sha1"], check=False)
        if result.returncode != 0 and "not found" not in (result.stdout + result.stderr).lower():
            raise StoreError(f"certutil.exe -delstore failed: {(result.stdout + result.stderr).strip()[-200:]}")

    def check(self, ca: CA, target: Target) -> CheckResult:
        result = self._certutil("-verifystore", "-user", "Root", ca.sha1, check=False)
        if result.returncode == 0:
            return CheckResult(Verdict.TRUSTED, "certutil.exe -verifystore: present in Root")
        return CheckResult(Verdict.NOT_TRUSTED, "not in the current user's Root store")
