"""Edge certificates: one per certificate group (`*.<user>.<domain>`), issued from the team CA by
whichever hub sees the need first, stored in etcd so every hub serves the same one, and
re-issued once two thirds of its life have passed (the edges get it over SDS in place).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import structlog

from ..certs import CertificateAuthority
from .etcd import Etcd
from .identity import Team, issue_server
from .store import CERTS, TeamView

log = structlog.get_logger("gotunnel.hub")

DEFAULT_VALIDITY = timedelta(days=7)
#: Certificates written per etcd transaction (etcd allows 128 operations by default).
BATCH = 64


def due(not_after: float, validity: timedelta, now: float | None = None) -> bool:
    """True once less than a third of the validity is left (renew well before expiry)."""
    return not_after - (now or time.time()) < validity.total_seconds() / 3


async def ensure_certs(etcd: Etcd, view: TeamView, ca: CertificateAuthority, team: Team,
                       validity: timedelta = DEFAULT_VALIDITY) -> int:
    """Issue the missing or due certificates of every group that has names; returns how many.

    Written in transactions of up to BATCH keys, each on the keys' revisions, so a second hub
    doing the same at the same time changes nothing (it then serves the winner's certificates,
    which its watch delivers); a batch that lost a race is retried key by key."""
    groups = sorted({team.cert_group(fqdn) for fqdn in view.routes})
    wanted: dict[str, int] = {}
    for group in groups:
        current = view.certs.get(group)
        if current is None or due(current.not_after, validity):
            wanted[group] = view.cert_revisions.get(group, 0)
    issued = 0
    items = list(wanted.items())
    for start in range(0, len(items), BATCH):
        batch: dict[str, tuple[bytes, int]] = {}
        for group, revision in items[start:start + BATCH]:
            cert, key, not_after = issue_server(ca, [group], validity)
            value = json.dumps({"cert": cert.decode(), "key": key.decode(), "not_after": not_after}).encode()
            batch[CERTS + group] = (value, revision)
        if await etcd.put_all_if(batch):
            issued += len(batch)
            continue
        for key_name, (value, revision) in batch.items():
            done, _ = await etcd.put_if(key_name, value, mod_revision=revision)
            issued += int(done)
    if issued:
        log.info("hub.edge_certs", issued=issued)
    return issued
