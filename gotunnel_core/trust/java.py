"""Java's `cacerts` keystore under JAVA_HOME, through `keytool` (only when JAVA_HOME is set).

The store password defaults to Java's `changeit` (GOTUNNEL_TRUST_JAVA_STOREPASS overrides it).
Not exercised by the test suite without a JDK; its commands are checked against a fake keytool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict, writable


class JavaStore(TrustStore):
    id = "java"
    title = "Java cacerts (JAVA_HOME)"

    @property
    def java_home(self) -> Path | None:
        value = self.env.environ.get("JAVA_HOME")
        return Path(value) if value else None

    def _keytool(self) -> Path | None:
        home = self.java_home
        if home is None:
            return None
        for name in ("keytool", "keytool.exe"):
            if (home / "bin" / name).is_file():
                return home / "bin" / name
        return None

    def cacerts(self) -> Path | None:
        home = self.java_home
        if home is None:
            return None
        for rel in ("lib/security/cacerts", "jre/lib/security/cacerts"):
            if (home / rel).is_file():
                return home / rel
        return None

    def detect(self) -> Detection:
        if self.java_home is None:
            return Detection(False, "JAVA_HOME is not set")
        if self._keytool() is None or self.cacerts() is None:
            return Detection(False, f"no keytool or cacerts under JAVA_HOME={self.java_home}")
        return Detection(True, str(self.cacerts()))

    def needs_privilege(self) -> bool:
        cacerts = self.cacerts()
        return cacerts is not None and not (writable(cacerts.parent) and writable(cacerts))

    def _run(self, *args: str, keystore: str, check: bool = True) -> Any:
        tool = self._keytool()
        if tool is None:
            raise StoreError("keytool not found under JAVA_HOME")
        password = self.env.get("GOTUNNEL_TRUST_JAVA_STOREPASS", "changeit")
        return self.env.run([str(tool), *args, "-keystore", keystore, "-storepass", password], check=check)

    def install(self, ca: CA) -> dict[str, Any]:
        cacerts = self.cacerts()
        assert cacerts is not None
        alias = ca.file_stem
        self._run("-importcert", "-noprompt", "-trustcacerts", "-alias", alias, "-file", str(ca.path),
                  keystore=str(cacerts))
        return {"keystore": str(cacerts), "alias": alias, "items": [f"{cacerts} alias {alias}"]}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        if not Path(record["keystore"]).is_file():
            return
        listed = self._run("-list", "-alias", record["alias"], keystore=record["keystore"], check=False)
        if listed.returncode == 0:
            self._run("-delete", "-alias", record["alias"], keystore=record["keystore"])

    def check(self, ca: CA, target: Target) -> CheckResult:
        cacerts = self.cacerts()
        assert cacerts is not None
        listed = self._run("-list", "-alias", ca.file_stem, keystore=str(cacerts), check=False)
        if listed.returncode == 0:
            return CheckResult(Verdict.TRUSTED, f"alias {ca.file_stem} in {cacerts} (no handshake: no JVM run)")
        return CheckResult(Verdict.NOT_TRUSTED, f"alias {ca.file_stem} not in {cacerts}")
