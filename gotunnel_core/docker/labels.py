"""Container labels -> tunnel declarations, with every bad label reported, never guessed at.

    gotunnel.name=web                 the container's tunnel: web.localhost, web.local
    gotunnel.port=8080                the container port to proxy to (default: its only exposed port)
    gotunnel.https=false              serve plain HTTP only (default: HTTP and HTTPS)
    gotunnel.health=/healthz          active health check path
    gotunnel.<tunnel>.name=api        more tunnels per container, each with its own name, port,
    gotunnel.<tunnel>.port=9000       https and health labels

Pure functions over the label mapping, so a property test can throw anything at them. A bad
label makes only its own tunnel unservable; the container's other tunnels and every other
container keep working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from ..errors import ValidationError
from ..models import parse_path, parse_port, parse_tunnel_name

PREFIX = "gotunnel."
FIELDS = ("name", "port", "https", "health")
_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62})$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class LabelledTunnel:
    """One tunnel a container declares. `key` is "" for `gotunnel.name`, else the `<tunnel>` segment."""

    key: str
    name: str
    port: int | None = None
    https: bool = True
    health: str | None = None

    def label(self, field_name: str) -> str:
        """The label that sets `field_name` of this tunnel, e.g. `gotunnel.api.port`."""
        return f"{PREFIX}{self.key + '.' if self.key else ''}{field_name}"


@dataclass(frozen=True)
class LabelProblem:
    """A label that cannot be used: which one, its value, and why."""

    label: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"label {self.label}={self.value!r}: {self.reason}"


def has_tunnel_labels(labels: Mapping[str, str] | None) -> bool:
    """Whether any label is one of ours (containers without them are none of gotunnel's business)."""
    return any(key.startswith(PREFIX) for key in (labels or {}))


def parse_labels(labels: Mapping[str, str] | None) -> tuple[list[LabelledTunnel], list[LabelProblem]]:
    """The tunnels `labels` declare, and the problems of those that cannot be served."""
    groups: dict[str, dict[str, str]] = {}
    problems: list[LabelProblem] = []
    for label, value in sorted((labels or {}).items()):
        if not label.startswith(PREFIX):
            continue
        parts = label[len(PREFIX):].split(".")
        if len(parts) == 1 and parts[0] in FIELDS:
            key, field_name = "", parts[0]
        elif len(parts) == 2 and parts[1] in FIELDS and _KEY_RE.match(parts[0]):
            key, field_name = parts
        else:
            problems.append(LabelProblem(label, value, "unknown label; use gotunnel.name/port/https/health or "
                                                       "gotunnel.<tunnel>.name/port/https/health"))
            continue
        groups.setdefault(key, {})[field_name] = value
    tunnels: list[LabelledTunnel] = []
    seen: dict[str, str] = {}
    for key in sorted(groups):
        tunnel, tunnel_problems = _parse_group(key, groups[key])
        problems += tunnel_problems
        if tunnel is None:
            continue
        if tunnel.name in seen:
            problems.append(LabelProblem(tunnel.label("name"), groups[key]["name"],
                                         f"duplicate tunnel name {tunnel.name!r}: {seen[tunnel.name]} already declares it"))
            continue
        seen[tunnel.name] = tunnel.label("name")
        tunnels.append(tunnel)
    return tunnels, problems


def _parse_group(key: str, fields: Mapping[str, str]) -> tuple[LabelledTunnel | None, list[LabelProblem]]:
    """One tunnel from its labels; None (with the reasons) when any of them is bad."""
    probe = LabelledTunnel(key, "")
    problems: list[LabelProblem] = []
    if "name" not in fields:
        others = ", ".join(probe.label(f) for f in sorted(fields))
        problems.append(LabelProblem(probe.label("name"), "", f"missing: {others} need a tunnel name"))
    values: dict[str, object] = {}
    for field_name, raw in sorted(fields.items()):
        try:
            values[field_name] = _PARSERS[field_name](raw)
        except ValidationError as exc:
            problems.append(LabelProblem(probe.label(field_name), raw, exc.reason))
    if problems:
        return None, problems
    return LabelledTunnel(key, **values), []  # type: ignore[arg-type]


def _parse_https(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise ValidationError("https", raw, "must be true or false")


_PARSERS = {
    "name": parse_tunnel_name,
    "port": lambda raw: parse_port(raw.strip()),
    "https": _parse_https,
    "health": lambda raw: parse_path(raw, "health path"),
}
