"""Edge certificates: CERT_BUCKETS certificates per team, each holding the wildcards of the users
that hash into it (`*.alice.<domain>`) plus a placeholder name. A hub re-issues a bucket when its
users change or two thirds of its life have passed, into etcd, so every hub serves the same
bytes; the edges get them over SDS and swap them in place (their listener never changes).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import structlog

from ..certs import CertificateAuthority
from .etcd import Etcd
from .identity import CERT_BUCKETS, Team, issue_server
from .store import CERTS, TeamView

log = structlog.get_logger("gotunnel.hub")

DEFAULT_VALIDITY = timedelta(days=7)


def due(not_after: float, validity: timedelta, now: float | None = None) -> bool:
    """True once less than a third of the validity is left (renew well before expiry)."""
    return not_after - (now or time.time()) < validity.total_seconds() / 3


def bucket_key(bucket: int) -> str:
    return f"bucket-{bucket:02d}"


async def ensure_certs(etcd: Etcd, view: TeamView, ca: CertificateAuthority, team: Team,
                       validity: timedelta = DEFAULT_VALIDITY) -> int:
    """Issue every bucket whose names changed or that is due; returns how many were written,
    or -1 when another hub wrote first.

    One etcd transaction on the buckets' revisions, so a second hub doing the same at the same
    time changes nothing (it then serves the winner's certificates, which its watch delivers)."""
    wanted: dict[int, set[str]] = {b: {team.bucket_placeholder(b)} for b in range(CERT_BUCKETS)}
    for fqdn in view.routes:
        group = team.cert_group(fqdn)
        wanted[team.bucket_of(group)].add(group)
    batch: dict[str, tuple[bytes, int]] = {}
    for bucket, names in wanted.items():
        key = bucket_key(bucket)
        current = view.certs.get(key)
        if current is not None and set(current.names) >= names and not due(current.not_after, validity):
            continue  # names of users who left stay until the next renewal
        if current is not None:
            names |= set(current.names) if not due(current.not_after, validity) else set()
        ordered = sorted(names)
        cert, private, not_after = issue_server(ca, ordered, validity)
        value = json.dumps({"cert": cert.decode(), "key": private.decode(), "not_after": not_after,
                            "names": ordered}).encode()
        batch[CERTS + key] = (value, view.cert_revisions.get(key, 0))
    if not batch:
        return 0
    if not await etcd.put_all_if(batch):
        return -1  # another hub wrote first: its certificates arrive by the watch; look again then
    log.info("hub.edge_certs", issued=len(batch))
    return len(batch)
