"""Every trust-store strategy, in preference order, and selection by `--store`."""

from __future__ import annotations

from typing import Iterable

from ..errors import UsageError
from .base import Detection, TrustEnv, TrustStore
from .java import JavaStore
from .macos import MacOSStore
from .nss import NSSStore
from .system_arch import ArchSystemStore
from .system_debian import DebianSystemStore
from .system_fedora import FedoraSystemStore
from .windows import WindowsStore

#: Order matters inside a group: the first present system store is the one used.
STORE_CLASSES: tuple[type[TrustStore], ...] = (
    DebianSystemStore,
    FedoraSystemStore,
    ArchSystemStore,
    NSSStore,
    MacOSStore,
    WindowsStore,
    JavaStore,
)


def all_stores(env: TrustEnv) -> list[TrustStore]:
    return [cls(env) for cls in STORE_CLASSES]


def detect_all(stores: Iterable[TrustStore]) -> dict[str, Detection]:
    """Detect every store; of a group only the first present one counts as present."""
    result: dict[str, Detection] = {}
    used: dict[str, str] = {}
    for store in stores:
        found = store.detect()
        if found.present and store.group:
            if store.group in used:
                found = Detection(False, f"the {store.group} store is managed through {used[store.group]}")
            else:
                used[store.group] = store.id
        result[store.id] = found
    return result


def select(stores: list[TrustStore], names: Iterable[str]) -> list[TrustStore]:
    """The stores named by `--store` (an id, or a group such as `system`); all when none is named."""
    names = list(names)
    if not names:
        return stores
    chosen: list[TrustStore] = []
    known = sorted({s.id for s in stores} | {s.group for s in stores if s.group})
    for name in names:
        matches = [s for s in stores if name in (s.id, s.group)]
        if not matches:
            raise UsageError(f"unknown trust store {name!r}; known: {', '.join(known)}")
        chosen += [s for s in matches if s not in chosen]
    return chosen
