"""A small asyncio etcd v3 client: ranges, transactions, leases and resumable watches.

The wire types and stubs are etcd's own protobufs as compiled and shipped by `aetcd` (a
maintained asyncio etcd client; `aetcd.rpc` is its public module of etcd's generated stubs).
aetcd's high-level `Client` takes one host and no TLS, and the team needs several endpoints
(`--etcd URL,URL`) with failover; so the channel is ours: one grpc.aio channel over every
endpoint (`ipv4:a:p,b:p`, pick_first), optionally TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from ..errors import ValidationError
from .etcdtls import EtcdTls

#: How long one unary etcd call may take before it counts as failed.
CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Endpoint:
    """One etcd endpoint from a `--etcd` URL."""

    host: str
    port: int
    tls: bool


def parse_endpoints(raw: str) -> tuple[Endpoint, ...]:
    """`http://10.0.0.1:2379,https://10.0.0.2:2379` -> endpoints; one scheme for all of them."""
    out: list[Endpoint] = []
    for item in (part.strip() for part in str(raw).split(",")):
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        try:
            port = parts.port or 2379
        except ValueError:
            raise ValidationError("--etcd", item, "port must be a number from 1 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValidationError("--etcd", item, "expected http://HOST:PORT or https://HOST:PORT")
        out.append(Endpoint(parts.hostname, port, parts.scheme == "https"))
    if not out:
        raise ValidationError("--etcd", raw, "needs at least one URL such as http://127.0.0.1:2379")
    if len({e.tls for e in out}) > 1:
        raise ValidationError("--etcd", raw, "mixes http and https endpoints")
    return tuple(out)


def _target(endpoints: Sequence[Endpoint]) -> str:
    """A gRPC target naming every endpoint, so the channel fails over between them."""
    hosts = [e.host for e in endpoints]
    try:
        ips = [ipaddress.ip_address(h) for h in hosts]
    except ValueError:
        if len(endpoints) > 1:
            raise ValidationError("--etcd", ",".join(hosts), "several endpoints must be IP addresses") from None
        return f"dns:///{endpoints[0].host}:{endpoints[0].port}"
    scheme = "ipv6" if all(ip.version == 6 for ip in ips) else "ipv4"
    return scheme + ":" + ",".join(f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}" for e in endpoints)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    """A put (value set) or a delete (value None) at `revision`."""

    key: str
    value: bytes | None
    revision: int


#: What gRPC's details say when the TLS handshake failed (etcd refused us, or we refused it).
_TLS_FAILURES = ("TSI_", "SSL", "ssl", "handshake", "certificate")


def unreachable(urls: str, exc: grpc.aio.AioRpcError, tls: EtcdTls | None = None) -> str:
    """One line for a failed etcd call: the status and gRPC's reason, and for a failed TLS
    handshake what is most likely missing (a refused handshake must not read like a dead etcd)."""
    detail = " ".join(str(exc.details() or "").split())[:300]
    if any(mark in detail for mark in _TLS_FAILURES):
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            why = "etcd's certificate is not signed by --etcd-ca (or, without it, by a CA this system trusts)"
        elif tls is None or not tls.client_auth:
            why = "etcd requires a client certificate (--etcd-cert and --etcd-key)"
        else:
            why = "check that --etcd-ca signed etcd's certificate and that etcd trusts --etcd-cert"
        return f"etcd at {urls} refused the TLS handshake: {why} ({detail})"
    return f"etcd at {urls} did not answer: {exc.code().name}" + (f" ({detail})" if detail else "")


class WatchReset(Exception):
    """The watch cannot resume (the revision was compacted, or etcd was replaced): re-list."""


def _kv(item: Any) -> KeyValue:
    return KeyValue(item.key.decode(), bytes(item.value), item.mod_revision, item.create_revision, item.lease)


def prefix_end(prefix: str) -> bytes:
    """The range end covering every key that starts with `prefix`."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


class Etcd:
    """One channel to the etcd cluster; every method may raise `grpc.aio.AioRpcError`."""

    def __init__(self, endpoints: Sequence[Endpoint], *, ca: bytes | None = None, cert: bytes | None = None,
                 key: bytes | None = None) -> None:
        options = [("grpc.lb_policy_name", "pick_first"), ("grpc.keepalive_time_ms", 5000),
                   ("grpc.keepalive_timeout_ms", 3000), ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 64 << 20)]
        target = _target(endpoints)
        if endpoints[0].tls:
            creds = grpc.ssl_channel_credentials(ca, key, cert)
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.kv = rpc.KVStub(self.channel)
        self.leases = rpc.LeaseStub(self.channel)
        self.watcher = rpc.WatchStub(self.channel)

    @classmethod
    def from_urls(cls, urls: str, tls: "EtcdTls | None" = None) -> "Etcd":
        if tls is None:
            return cls(parse_endpoints(urls))
        return cls(parse_endpoints(urls), ca=tls.ca, cert=tls.cert, key=tls.key)

    async def close(self) -> None:
        await self.channel.close()

    # ----- keys ---------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        answer = await self.kv.Range(rpc.RangeRequest(key=key.encode()), timeout=CALL_TIMEOUT)
        return _kv(answer.kvs[0]) if answer.kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision they were read at."""
        answer = await self.kv.Range(rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix)),
                                     timeout=CALL_TIMEOUT * 4)
        return [_kv(item) for item in answer.kvs], answer.header.revision

    async def put(self, key: str, value: bytes, lease: int = 0) -> None:
        await self.kv.Put(rpc.PutRequest(key=key.encode(), value=value, lease=lease), timeout=CALL_TIMEOUT)

    async def delete(self, key: str) -> None:
        await self.kv.DeleteRange(rpc.DeleteRangeRequest(key=key.encode()), timeout=CALL_TIMEOUT)

    async def put_if(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> tuple[bool, KeyValue | None]:
        """Put `value` when the key's mod revision is `mod_revision` (0: the key does not exist).

        Returns (done, the current key when not done) in one round trip.
        """
        compare = rpc.Compare(key=key.encode(), result=rpc.Compare.EQUAL, target=rpc.Compare.MOD,
                              mod_revision=mod_revision)
        success = rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=value, lease=lease))
        failure = rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode()))
        answer = await self.kv.Txn(rpc.TxnRequest(compare=[compare], success=[success], failure=[failure]),
                                   timeout=CALL_TIMEOUT)
        if answer.succeeded:
            return True, None
        kvs = answer.responses[0].response_range.kvs
        return False, _kv(kvs[0]) if kvs else None

    async def create_all(self, items: dict[str, bytes], lease: int = 0) -> bool:
        """Put every key in one transaction if none of them exists yet; False (nothing written) otherwise."""
        return await self.put_all_if({k: (v, 0) for k, v in items.items()}, lease=lease)

    async def put_all_if(self, items: dict[str, tuple[bytes, int]], lease: int = 0) -> bool:
        """Put every key (value, expected mod revision; 0 = absent) in one transaction, all or nothing."""
        compares = [rpc.Compare(key=k.encode(), result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)
                    for k, (_, rev) in items.items()]
        puts = [rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v, lease=lease))
                for k, (v, _) in items.items()]
        answer = await self.kv.Txn(rpc.TxnRequest(compare=compares, success=puts), timeout=CALL_TIMEOUT)
        return bool(answer.succeeded)

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        compare = rpc.Compare(key=key.encode(), result=rpc.Compare.EQUAL, target=rpc.Compare.MOD,
                              mod_revision=mod_revision)
        success = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key.encode()))
        answer = await self.kv.Txn(rpc.TxnRequest(compare=[compare], success=[success]), timeout=CALL_TIMEOUT)
        return bool(answer.succeeded)

    # ----- leases -------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        answer = await self.leases.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=CALL_TIMEOUT)
        return int(answer.ID)

    async def revoke(self, lease: int) -> None:
        await self.leases.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease), timeout=CALL_TIMEOUT)

    async def keepalive_once(self, leases: Sequence[int]) -> dict[int, int]:
        """Refresh `leases` on one keep-alive stream; lease -> remaining TTL (<= 0: gone)."""
        if not leases:
            return {}

        async def requests() -> AsyncIterator[Any]:
            for lease in leases:
                yield rpc.LeaseKeepAliveRequest(ID=lease)

        out: dict[int, int] = {}
        call = self.leases.LeaseKeepAlive(requests(), timeout=CALL_TIMEOUT * 2)
        async for answer in call:
            out[int(answer.ID)] = int(answer.TTL)
            if len(out) == len(set(leases)):
                break
        call.cancel()
        return out

    # ----- watches ------------------------------------------------------------------------
    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Batches of events under `prefix` from `start_revision` on.

        Ends by raising: `WatchReset` when the history is gone, or the gRPC error of a lost
        connection (the caller resumes from its last revision).
        """
        create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=prefix.encode(), range_end=prefix_end(prefix), start_revision=start_revision, progress_notify=True))
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield create
            await stop.wait()

        call = self.watcher.Watch(requests())
        try:
            async for answer in call:
                if answer.compact_revision:
                    raise WatchReset(f"revision {start_revision} was compacted (now {answer.compact_revision})")
                if answer.canceled:
                    raise WatchReset(answer.cancel_reason or "the watch was cancelled by etcd")
                events = [
                    WatchEvent(ev.kv.key.decode(), None if ev.type == rpc.Event.DELETE else bytes(ev.kv.value),
                               ev.kv.mod_revision)
                    for ev in answer.events
                ]
                if events:
                    yield events
            raise WatchReset("the watch stream ended")
        finally:
            stop.set()
            call.cancel()
