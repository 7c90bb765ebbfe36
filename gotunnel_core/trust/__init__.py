"""Trust installation: put gotunnel's CA into the stores programs trust (`gotunnel trust`).

One module per store strategy (system stores of Debian/Fedora/Arch, NSS, macOS, Windows, Java),
`env_bundle` for `--env`, a registry that detects which stores exist, and `trust.json` in the
state directory recording exactly what was installed. Imported only by the `trust` command.
"""

from .base import CA, CheckResult, Detection, StoreError, Target, TrustEnv, TrustStore, Verdict
from .record import TrustRecord
from .registry import STORE_CLASSES, all_stores, detect_all, select
from .service import Row, TrustService

__all__ = [
    "CA", "CheckResult", "Detection", "Row", "STORE_CLASSES", "StoreError", "Target", "TrustEnv", "TrustRecord",
    "TrustService", "TrustStore", "Verdict", "all_stores", "detect_all", "select",
]
