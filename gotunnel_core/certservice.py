"""The certificate service used by the daemon, `render` and `gotunnel cert`: one CA, one leaf per tunnel."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from .models import CertFiles, Listen, RouteTable, Tunnel
from .paths import StateLayout


class CertService:
    """Issues and renews tunnel certificates from the local CA in the state directory."""

    def __init__(self, layout: StateLayout, settings: Mapping[str, Any]) -> None:
        from .certs import CertificateAuthority, LeafIssuer

        self.ca = CertificateAuthority(layout.ca_dir, extra_suffixes=tuple(settings.get("ca_extra_suffixes") or ()))
        self.ca.ensure()
        self.issuer = LeafIssuer(
            self.ca,
            layout.certs_dir,
            validity=timedelta(days=int(settings.get("cert_validity_days", 90))),
            renew_before=timedelta(days=int(settings.get("cert_renew_days", 30))),
        )
        self._checked: dict[str, tuple[tuple[int, int, int] | None, CertFiles, datetime]] = {}

    def for_tunnels(self, names: Iterable[str]) -> dict[str, CertFiles]:
        """Certificate files for each tunnel name, issuing or renewing as needed.

        A pair checked before is not parsed again while its file is unchanged and its renewal
        time has not come, so a route change costs the same with 1 or 1,000 tunnels.
        """
        result: dict[str, CertFiles] = {}
        now = self.issuer.clock()
        for name in names:
            cached = self._checked.get(name)
            if cached is not None and cached[0] == _stamp(cached[1].cert) and now < cached[2]:
                result[name] = cached[1]
                continue
            pair = self.issuer.ensure_leaf(name)
            files = CertFiles(str(pair.cert_path), str(pair.key_path))
            self._checked[name] = (_stamp(files.cert), files, pair.not_after - self.issuer.renew_before)
            result[name] = files
        return result

    def route_table(self, listen: Listen, tunnels: Iterable[Tunnel], options: Mapping[str, Any] | None = None) -> RouteTable:
        """The route table an engine serves: `tunnels` sorted by name, each with its certificate,
        plus the default certificate (issued or renewed as needed), and `options` (`table_options`).
        Used by the daemon and `render`."""
        ordered = tuple(sorted(tunnels, key=lambda t: t.name))
        return RouteTable(listen, ordered, self.for_tunnels(t.name for t in ordered), self.default(), **(options or {}))

    def release(self, names: Iterable[str]) -> None:
        """Mark the certificates of removed tunnels as unused from now (their files' mtime), so
        `prune` keeps them for the grace period; a tunnel coming back reuses its certificate."""
        for name in names:
            self._checked.pop(name, None)
            try:
                os.utime(self.issuer.cert_path(name))
            except OSError:
                pass

    def prune(self, in_use: Iterable[str], keep_days: float) -> list[str]:
        """Delete the certificate and key of every tunnel not in `in_use` whose certificate was
        last touched (issued, renewed or released) more than `keep_days` ago; returns the names."""
        from .certs import DEFAULT_NAME
        from .certs.names import name_from_filename

        used = set(in_use) | {DEFAULT_NAME}
        directory = self.issuer.directory
        if not directory.is_dir():
            return []
        cutoff = time.time() - keep_days * 86400
        removed = []
        for path in sorted(directory.glob("*.pem")):
            if path.name.startswith(".") or path.name.endswith("_key.pem"):
                continue
            name = name_from_filename(path.name[: -len(".pem")])
            if name is None or name in used:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except OSError:
                continue
            self.issuer.remove(name)
            self._checked.pop(name, None)
            removed.append(name)
        return removed

    def default(self) -> CertFiles:
        """The `localhost` certificate served for an SNI name that matches no tunnel."""
        pair = self.issuer.ensure_default()
        return CertFiles(str(pair.cert_path), str(pair.key_path))

    def default_due(self) -> bool:
        """Whether the default `localhost` certificate needs renewal now."""
        from .certs import DEFAULT_NAME

        return self.issuer.due(DEFAULT_NAME)

    def expiry(self) -> list[dict[str, Any]]:
        """Every leaf with its serial and expiry, for `gotunnel status`."""
        return [info.to_dict() for info in self.issuer.list_leaves()]


def _stamp(path: str) -> tuple[int, int, int] | None:
    """Identity of a file's current content (mtime, size, inode); None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def table_options(settings: Mapping[str, Any], state_root: "os.PathLike[str] | str") -> dict[str, Any]:
    """The route table's fields that come from settings: the upstream timeout, this state
    directory's loop marker, and whether `NAME.local` resolves (for the 404 page's links)."""
    from pathlib import Path

    from .loops import hop_id

    return {
        "upstream_timeout": float(settings.get("upstream_timeout", 60.0)),
        "hop_id": hop_id(Path(state_root)),
        "mdns": bool(settings.get("mdns")),
        "hosts": bool(settings.get("hosts")),
    }
