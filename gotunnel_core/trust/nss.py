"""NSS databases through `certutil` (libnss3-tools): the user's `~/.pki/nssdb`, which Chrome and
Chromium use on Linux, and every Firefox profile, including the snap and flatpak locations.

`~/.pki/nssdb` is created (empty password) when it is missing but a Chrome/Chromium is installed,
so a browser that has never run still trusts the CA on first start. Under sudo, certutil runs as
the invoking user so the databases stay theirs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from .base import CA, CheckResult, Detection, StoreError, Target, TrustStore, Verdict

#: Firefox profile roots, relative to the home directory: plain, snap, flatpak.
FIREFOX_ROOTS = (
    ".mozilla/firefox",
    "snap/firefox/common/.mozilla/firefox",
    ".var/app/org.mozilla.firefox/.mozilla/firefox",
)
CHROME_DB = ".pki/nssdb"
CHROME_PROGRAMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "brave-browser",
                   "microsoft-edge")
#: Trusted to issue server certificates only (not e-mail or code signing).
TRUST_FLAGS = "C,,"


def db_spec(directory: Path) -> str | None:
    """`sql:DIR` for a cert9.db database, `dbm:DIR` for a legacy cert8.db one, None if neither."""
    if (directory / "cert9.db").is_file():
        return f"sql:{directory}"
    if (directory / "cert8.db").is_file():
        return f"dbm:{directory}"
    return None


class NSSStore(TrustStore):
    id = "nss"
    title = "NSS databases (Chrome/Chromium ~/.pki/nssdb, Firefox profiles)"

    def _certutil(self) -> str | None:
        return self.env.which("certutil")

    def _chrome(self) -> str | None:
        return next((p for p in (self.env.which(n) for n in CHROME_PROGRAMS) if p), None)

    def databases(self) -> list[Path]:
        """Existing databases: ~/.pki/nssdb first, then Firefox profiles sorted by path."""
        home = self.env.home
        found: list[Path] = []
        chrome = home / CHROME_DB
        if db_spec(chrome):
            found.append(chrome)
        for root in FIREFOX_ROOTS:
            base = home / root
            if base.is_dir():
                found += sorted(p for p in base.iterdir() if p.is_dir() and db_spec(p))
        return found

    def _to_create(self) -> Path | None:
        """~/.pki/nssdb when it is missing but a Chrome/Chromium would use it."""
        chrome = self.env.home / CHROME_DB
        return chrome if not db_spec(chrome) and self._chrome() else None

    def detect(self) -> Detection:
        if self._certutil() is None:
            dbs = self.databases()
            why = f" ({len(dbs)} database(s) found)" if dbs else ""
            return Detection(False, f"certutil not found: install libnss3-tools (nss-tools){why}")
        names = [str(d) for d in self.databases()]
        create = self._to_create()
        if create is not None:
            names.insert(0, f"{create} (to create, for {Path(self._chrome() or '').name})")
        if not names:
            return Detection(False, f"no NSS database under {self.env.home} and no Chrome/Chromium installed")
        return Detection(True, ", ".join(names))

    def _run(self, *args: str, check: bool = True) -> Any:
        tool = self._certutil()
        if tool is None:
            raise StoreError("certutil not found", hint="install libnss3-tools")
        return self.env.run([tool, *args], as_user=True, check=check)

    def _create(self, directory: Path) -> None:
        missing = []
        p = directory
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            if self.env.as_other_user:
                import os

                os.chown(d, self.env.uid, self.env.gid)
        self._run("-N", "-d", f"sql:{directory}", "--empty-password")

    def _has(self, spec: str, nickname: str) -> bool:
        return self._run("-L", "-d", spec, "-n", nickname, check=False).returncode == 0

    def _delete(self, spec: str, nickname: str) -> None:
        for _ in range(10):  # a nickname can appear more than once; delete until it is gone
            if not self._has(spec, nickname):
                return
            self._run("-D", "-d", spec, "-n", nickname)

    def install(self, ca: CA) -> dict[str, Any]:
        created: list[str] = []
        done: list[str] = []
        try:
            target = self._to_create()
            if target is not None:
                top = target
                while not top.parent.exists():
                    top = top.parent
                self._create(target)
                created.append(str(top if top != target else target))
            for db in self.databases():
                spec = db_spec(db)
                assert spec is not None
                self._run("-A", "-d", spec, "-n", ca.nickname, "-t", TRUST_FLAGS, "-i", str(ca.path))
                done.append(spec)
        except Exception:
            for spec in done:  # roll back: nothing half-done
                try:
                    self._delete(spec, ca.nickname)
                except StoreError:
                    pass
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return {"nickname": ca.nickname, "databases": done, "created": created, "items": done}

    def uninstall(self, record: Mapping[str, Any]) -> None:
        nickname = record["nickname"]
        problems = []
        for spec in record.get("databases", []):
            if not Path(spec.split(":", 1)[1]).is_dir():
                continue  # the database itself is gone (profile deleted)
            try:
                self._delete(spec, nickname)
            except StoreError as exc:
                problems.append(exc.message)
        if problems:
            raise StoreError("; ".join(problems))
        # A database gotunnel created is left in place: the browser may have stored things in it since.

    def _check_db(self, spec: str, ca: CA, target: Target) -> CheckResult:
        tstclnt = self.env.which("tstclnt")
        if tstclnt is not None and not target.offline:
            import os
            import tempfile

            # The request comes from a file (-A): with a pipe on stdin tstclnt spins after EOF.
            with tempfile.NamedTemporaryFile("w", prefix="gotunnel-check-", suffix=".http") as request:
                request.write(f"HEAD / HTTP/1.0\r\nHost: {target.server_name}\r\n\r\n")
                request.flush()
                os.chmod(request.name, 0o644)  # readable for the invoking user under sudo
                try:
                    result = self.env.run([tstclnt, "-h", target.host, "-p", str(target.port), "-a",
                                           target.server_name, "-d", spec, "-V", "tls1.2:", "-A", request.name],
                                          as_user=True, timeout=15, check=False)
                except StoreError as exc:
                    return CheckResult(Verdict.UNKNOWN, exc.message)
            output = result.stderr + result.stdout
            if "authentication of server cert failed" in output or "SEC_ERROR" in output:
                error = next((w for w in output.split() if w.startswith("SEC_ERROR")), "not trusted")
                return CheckResult(Verdict.NOT_TRUSTED, f"tstclnt handshake: {error.rstrip(':')}")
            if result.returncode == 0:
                return CheckResult(Verdict.TRUSTED, "tstclnt handshake verified")
            return CheckResult(Verdict.UNKNOWN, f"tstclnt exit {result.returncode}: {output.strip()[-200:]}")
        result = self._run("-V", "-u", "L", "-n", ca.nickname, "-d", spec, check=False)
        if result.returncode == 0 and "certificate is valid" in result.stdout:
            return CheckResult(Verdict.TRUSTED, "certutil -V: valid SSL CA")
        reason = (result.stdout.strip() or result.stderr.strip() or "not found").splitlines()[-1]
        return CheckResult(Verdict.NOT_TRUSTED, f"certutil -V: {reason}")

    def check(self, ca: CA, target: Target) -> CheckResult:
        dbs = self.databases()
        if not dbs:
            return CheckResult(Verdict.MISSING, "no NSS database")
        results = [(db, self._check_db(db_spec(db) or "", ca, target)) for db in dbs]
        verdicts = {r.verdict for _, r in results}
        verdict = (Verdict.TRUSTED if verdicts == {Verdict.TRUSTED}
                   else Verdict.NOT_TRUSTED if Verdict.NOT_TRUSTED in verdicts else Verdict.UNKNOWN)
        return CheckResult(verdict, "; ".join(f"{db}: {r.verdict.value} ({r.detail})" for db, r in results))

    def summary(self, record: Mapping[str, Any]) -> str:
        dbs = record.get("databases", [])
        return f"{len(dbs)} database(s): " + ", ".join(d.split(":", 1)[1] for d in dbs)
