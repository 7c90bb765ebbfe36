"""Routes for a proxy gotunnel does not run (`gotunnel render --for existing`, `gotunnel sync`).

The ops use case: the same tunnels, served under real DNS names (a tunnel's `hosts`, or the
`domain_template` setting) with certificates the user manages (`tls = {cert, key}`), the engine's
own ACME (`tls = "acme"`, from the `acme_ca`/`acme_ca_root`/`acme_email` settings' server) or
none (`tls = "off"`, TLS ends elsewhere). Nothing here touches the local CA: it signs only its
constrained `.localhost`/`.local` names, never these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UsageError, ValidationError
from .models import Listen, TlsPolicy, Tunnel, parse_public_host

OFF = TlsPolicy("off")


@dataclass(frozen=True, slots=True)
class ExistingSite:
    """One tunnel as an existing proxy serves it: its real names and its TLS (paths absolute)."""

    tunnel: Tunnel
    hosts: tuple[str, ...]
    tls: TlsPolicy

    @property
    def slug(self) -> str:
        """The tunnel name as an identifier fragment (`*.api.x` -> `__api_x`): tunnel names never
        hold `_`, so two tunnels never share a slug."""
        return self.tunnel.name.replace("*", "_").replace(".", "_")


@dataclass(frozen=True, slots=True)
class AcmeIssuer:
    """Where an engine doing its own ACME gets certificates: the directory URL, the PEM file of
    the CA that serves it over HTTPS (absolute), the account's email; None: the engine's default."""

    ca: str | None = None
    ca_root: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class ExistingTable:
    """What an engine's `render_existing` gets: where to listen, every site (sorted by name) and,
    when the settings name one, the ACME server for `tls = "acme"` sites."""

    listen: Listen
    sites: tuple[ExistingSite, ...]
    acme: AcmeIssuer | None = None

    @property
    def acme_hosts(self) -> tuple[str, ...]:
        """The names of the sites whose engine gets their certificates by ACME."""
        return tuple(host for site in self.sites if site.tls.mode == "acme" for host in site.hosts)


def site_names(tunnel: Tunnel, domain_template: str | None) -> tuple[str, ...]:
    """A tunnel's real names: its `hosts`, else `domain_template` with `{name}` filled in."""
    if tunnel.hosts:
        return tunnel.hosts
    if domain_template:
        return (parse_public_host(domain_template.replace("{name}", tunnel.name), "name from domain_template"),)
    raise UsageError(f"tunnel {tunnel.name!r} has no names for an existing proxy",
                     hint="give it hosts = [\"api.example.com\"] or set domain_template = \"{name}.dev.example.com\"")


def _pem_file(path: str, field: str, base_dir: Path) -> str:
    """An absolute path to a readable regular file (relative paths: from the config file's directory)."""
    full = Path(os.path.expanduser(path))
    full = full if full.is_absolute() else base_dir / full
    full = Path(os.path.abspath(full))
    if not full.is_file():
        raise ValidationError(field, path, f"no such file ({full})")
    if not os.access(full, os.R_OK):
        raise ValidationError(field, path, f"cannot be read ({full})")
    return str(full)


def _pem_certificates(path: str, field: str, base_dir: Path) -> str:
    """`_pem_file`, and the file holds at least one PEM certificate (a CA bundle)."""
    from cryptography import x509

    full = _pem_file(path, field, base_dir)
    try:
        x509.load_pem_x509_certificates(Path(full).read_bytes())
    except (OSError, ValueError):
        raise ValidationError(field, path, f"holds no PEM certificate ({full})") from None
    return full


def acme_issuer(settings: Mapping[str, Any], base_dir: Path) -> AcmeIssuer | None:
    """The ACME server of the `acme_ca`, `acme_ca_root` and `acme_email` settings (None: none
    set); `acme_ca_root` must be a readable PEM certificate file and needs `acme_ca`."""
    ca, root, email = settings.get("acme_ca"), settings.get("acme_ca_root"), settings.get("acme_email")
    if ca is None and root is None and email is None:
        return None
    if root is not None and ca is None:
        raise ValidationError("acme_ca_root", root, "trusts a private ACME server, but acme_ca does not name one",
                              hint="set acme_ca = \"https://HOST/directory\" too")
    return AcmeIssuer(ca, None if root is None else _pem_certificates(root, "acme_ca_root", base_dir), email)


def site_tls(tunnel: Tunnel, default: Any, base_dir: Path) -> TlsPolicy:
    """A tunnel's TLS: its own `tls`, else the `tls` setting; `off` for a tunnel with `https = false`."""
    if not tunnel.https:
        return OFF
    policy = tunnel.tls if tunnel.tls is not None else None if default is None else TlsPolicy.parse(default)
    if policy is None:
        raise UsageError(f"tunnel {tunnel.name!r} has no tls for an existing proxy",
                         hint="set tls = { cert = PATH, key = PATH }, \"acme\" or \"off\" on the tunnel or as a default")
    if policy.mode != "files":
        return policy
    return TlsPolicy("files", _pem_file(policy.cert, "tls.cert", base_dir), _pem_file(policy.key, "tls.key", base_dir))


def existing_table(tunnels: Iterable[Tunnel], listen: Listen, settings: Mapping[str, Any],
                   base_dir: Path) -> ExistingTable:
    """The sites for `tunnels` under `settings` (`domain_template`, `tls`, `acme_*`); a name claimed
    by two tunnels, a missing certificate file or a tunnel without names fails naming it (exit 2)."""
    sites: list[ExistingSite] = []
    owner: dict[str, str] = {}
    for tunnel in sorted(tunnels, key=lambda t: t.name):
        hosts = site_names(tunnel, settings.get("domain_template"))
        for host in hosts:
            if host in owner:
                raise UsageError(f"host {host!r} is claimed by tunnels {owner[host]!r} and {tunnel.name!r}")
            owner[host] = tunnel.name
        sites.append(ExistingSite(tunnel, hosts, site_tls(tunnel, settings.get("tls"), base_dir)))
    return ExistingTable(listen, tuple(sites), acme_issuer(settings, base_dir))


__all__ = ["AcmeIssuer", "ExistingSite", "ExistingTable", "acme_issuer", "existing_table", "site_names", "site_tls"]
