"""The certificate service used by the daemon, `render` and `gotunnel cert`: one CA, one leaf per tunnel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable, Mapping

from .models import CertFiles
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

    def for_tunnels(self, names: Iterable[str]) -> dict[str, CertFiles]:
        """Certificate files for each tunnel name, issuing or renewing as needed."""
        result: dict[str, CertFiles] = {}
        for name in names:
            pair = self.issuer.ensure_leaf(name)
            result[name] = CertFiles(str(pair.cert_path), str(pair.key_path))
        return result

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
