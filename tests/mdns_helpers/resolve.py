"""Test helper: watch `HOST` addresses and the DNS-SD services over mDNS, print JSON lines.

Events: {"event": "addrs", "addrs": [...]} whenever the live A/AAAA set for HOST changes,
{"event": "service", "type", "name", "port", "txt", "server"} when a service resolves,
{"event": "service_removed", "type", "name"} when its goodbye arrives.
Queries HOST's A record every second so changes are seen without waiting for TTLs.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys

from zeroconf import DNSOutgoing, DNSQuestion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_A, _TYPE_AAAA
from zeroconf._utils.time import current_time_millis


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    azc = AsyncZeroconf(interfaces=[args.addr])
    zc = azc.zeroconf
    await zc.async_wait_for_start()
    tasks: set[asyncio.Task] = set()

    async def resolve(type_: str, name: str) -> None:
        info = AsyncServiceInfo(type_, name)
        if await info.async_request(zc, 3000):
            emit({"event": "service", "type": type_, "name": name, "port": info.port,
                  "server": info.server,
                  "txt": {k.decode(): (v.decode() if v is not None else None)
                          for k, v in info.properties.items()},
                  "addresses": info.parsed_addresses()})

    def on_change(zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            emit({"event": "service_removed", "type": service_type, "name": name})
        else:
            t = asyncio.ensure_future(resolve(service_type, name))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(zc, ["_https._tcp.local.", "_http._tcp.local."], handlers=[on_change])
    emit({"event": "ready"})
    last: list[str] | None = None
    next_query = 0.0
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        if now >= next_query:
            out = DNSOutgoing(_FLAGS_QR_QUERY)
            out.add_question(DNSQuestion(args.host, _TYPE_A, _CLASS_IN))
            zc.async_send(out)
            next_query = now + 1.0
        ms = current_time_millis()
        addrs = sorted(
            str(ipaddress.ip_address(r.address))
            for r in zc.cache.async_entries_with_name(args.host)
            if r.type in (_TYPE_A, _TYPE_AAAA) and not r.is_expired(ms)
        )
        if addrs != last:
            emit({"event": "addrs", "addrs": addrs})
            last = addrs
        await asyncio.sleep(0.1)
    await browser.async_cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="address of the interface to listen on")
    parser.add_argument("--host", default="myapp.local.")
    asyncio.run(main(parser.parse_args()))
