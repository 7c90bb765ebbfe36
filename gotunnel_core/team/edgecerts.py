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


def due(not_after: float, validity: timedelta, now: float | None = None) -> bool:
    """True once less than a third of the validity is left (renew well before expiry)."""
    return not_after - (now or time.time()) < validity.total_seconds() / 3


async def ensure_certs(etcd: Etcd, view: TeamView, ca: CertificateAuthority, team: Team,
                       validity: timedelta = DEFAULT_VALIDITY) -> int:
    """Issue the missing or due certificates of every group that has names; returns how many.

    A transaction on the key's revision makes a second hub's attempt a no-op (it then serves
    the winner's certificate, which its watch delivers)."""
    groups = {team.cert_group(fqdn) for fqdn in view.routes}
    issued = 0
    for group in sorted(groups):
        current = view.certs.get(group)
        if current is not None and not due(current.not_after, validity):
            continue
        existing = await etcd.get(CERTS + group)
        if existing is not None and not due(float(json.loads(existing.value)["not_after"]), validity):
            continue  # another hub just issued it; the watch brings it
        cert, key, not_after = issue_server(ca, [group], validity)
        value = json.dumps({"cert": cert.decode(), "key": key.decode(), "not_after": not_after}).encode()
        done, _ = await etcd.put_if(CERTS + group, value, mod_revision=existing.mod_revision if existing else 0)
        if done:
            issued += 1
            log.info("hub.edge_cert", group=group, not_after=not_after)
    return issued
