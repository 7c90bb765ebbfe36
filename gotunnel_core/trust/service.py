"""What `gotunnel trust` does across the stores: install, uninstall, check, each reported per store.

A store that needs privileges we lack is not touched at all (it is reported with the command to
run); a store whose install fails has rolled itself back; every store that succeeded is written
to the record at once. So the machine is never left half-done, and the record is always true.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import GotunnelError
from ..paths import as_invoking_user
from .base import CA, Target, TrustEnv, TrustStore, Verdict
from .env_bundle import build_bundle
from .record import TrustRecord
from .registry import all_stores, detect_all, select

ENV_ID = "env"


@dataclass
class Row:
    store: str
    status: str  # installed, removed, not-installed, missing, needs-sudo, failed, trusted, not trusted, store missing, unknown
    detail: str = ""
    title: str = ""
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrustService:
    """Runs trust operations for one CA and one record file."""

    ca: CA
    record: TrustRecord
    bundle_dir: Path
    env: TrustEnv = field(default_factory=TrustEnv.current)
    stores: list[TrustStore] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.stores:
            self.stores = all_stores(self.env)

    def _recorded(self) -> dict[str, dict[str, Any]]:
        with as_invoking_user():
            return self.record.load()

    def _put(self, store_id: str, entry: dict[str, Any]) -> None:
        with as_invoking_user():
            self.record.put(store_id, {**entry, "ca_fingerprint": self.ca.fingerprint})

    def _drop(self, store_id: str) -> None:
        with as_invoking_user():
            self.record.drop(store_id)

    # -- install ------------------------------------------------------------------------------

    def install(self, names: list[str], sudo_command: Callable[[list[str]], str]) -> list[Row]:
        detected = detect_all(self.stores)
        recorded = self._recorded()
        rows: list[Row] = []
        for store in select(self.stores, names):
            found = detected[store.id]
            if not found.present:
                rows.append(Row(store.id, "missing", found.detail, store.title))
                continue
            if store.needs_privilege():
                rows.append(Row(store.id, "needs-sudo", f"changing it needs root ({found.detail})", store.title,
                                sudo_command([store.id])))
                continue
            try:
                previous = recorded.get(store.id)
                if previous and previous.get("ca_fingerprint") != self.ca.fingerprint:
                    store.uninstall(previous)  # a replaced CA: take the old one out first
                    self._drop(store.id)
                entry = store.install(self.ca)
            except GotunnelError as exc:
                rows.append(Row(store.id, "failed", exc.message + " (rolled back)", store.title))
                continue
            self._put(store.id, entry)
            rows.append(Row(store.id, "installed", store.summary(entry), store.title))
        return rows

    def install_env(self) -> dict[str, Any]:
        with as_invoking_user():
            info = build_bundle(self.bundle_dir, self.ca)
        self._put(ENV_ID, {"bundle": info["bundle"], "items": [info["bundle"]]})
        return info

    # -- uninstall ----------------------------------------------------------------------------

    def uninstall(self, names: list[str], sudo_command: Callable[[list[str]], str]) -> list[Row]:
        recorded = self._recorded()
        rows: list[Row] = []
        chosen = select(self.stores, names)
        for store in chosen:
            entry = recorded.get(store.id)
            if entry is None:
                if names:
                    rows.append(Row(store.id, "not-installed", "nothing recorded for this store", store.title))
                continue
            if store.needs_privilege():
                rows.append(Row(store.id, "needs-sudo", "removing it needs root", store.title,
                                sudo_command([store.id])))
                continue
            try:
                store.uninstall(entry)
            except GotunnelError as exc:
                rows.append(Row(store.id, "failed", exc.message, store.title))
                continue
            self._drop(store.id)
            rows.append(Row(store.id, "removed", store.summary(entry), store.title))
        if not names and ENV_ID in recorded:
            bundle = Path(recorded[ENV_ID]["bundle"])
            with as_invoking_user():
                bundle.unlink(missing_ok=True)
            self._drop(ENV_ID)
            rows.append(Row(ENV_ID, "removed", str(bundle), "environment bundle (--env)"))
        return rows

    # -- check --------------------------------------------------------------------------------

    def check(self, names: list[str], target: Target) -> list[Row]:
        detected = detect_all(self.stores)
        rows: list[Row] = []
        for store in select(self.stores, names):
            found = detected[store.id]
            if not found.present:
                rows.append(Row(store.id, Verdict.MISSING.value, found.detail, store.title))
                continue
            try:
                result = store.check(self.ca, target)
            except GotunnelError as exc:
                rows.append(Row(store.id, Verdict.UNKNOWN.value, exc.message, store.title))
                continue
            rows.append(Row(store.id, result.verdict.value, result.detail, store.title))
        return rows
