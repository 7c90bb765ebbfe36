"""mDNS advertiser, interface selection and resolver check.

Unit tests never open sockets. Tests marked `root` run real zeroconf traffic only inside
two network namespaces they create (joined by a veth pair) and delete afterwards; they
skip unless we are root with a working `ip netns`.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gotunnel_core.errors import GotunnelError, UsageError
from gotunnel_core.mdns import MdnsAdvertiser, NameConflict
from gotunnel_core.mdns.interfaces import (
    IFF_LOOPBACK,
    IFF_MULTICAST,
    IFF_UP,
    InterfaceInfo,
    select_interfaces,
)
from gotunnel_core.mdns.naming import candidates, mdns_base_name
from gotunnel_core.mdns.resolver_check import (
    evaluate,
    nss_modules,
    parse_nsswitch_hosts,
    parse_resolvectl_mdns,
)

REPO = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "mdns_helpers"
UP_MC = IFF_UP | IFF_MULTICAST | 0x2  # up, broadcast, multicast


# --- interface selection (pure) -------------------------------------------------------


def _snap(*infos: InterfaceInfo) -> dict[str, InterfaceInfo]:
    return {i.name: i for i in infos}


LAN_SNAPSHOT = _snap(
    InterfaceInfo("lo", IFF_UP | IFF_LOOPBACK, ("127.0.0.1", "::1"), 1, virtual=True),
    InterfaceInfo("eth0", UP_MC, ("192.168.1.20", "fe80::1", "2001:db8::20"), 2),
    InterfaceInfo("wlan0", UP_MC, ("10.0.0.5",), 3, devtype="wlan"),
    InterfaceInfo("docker0", UP_MC, ("172.17.0.1",), 4, virtual=True, devtype="bridge"),
    InterfaceInfo("br-1a2b3c", UP_MC, ("172.18.0.1",), 5, virtual=True, devtype="bridge"),
    InterfaceInfo("virbr0", UP_MC, ("192.168.122.1",), 6, virtual=True, devtype="bridge"),
    InterfaceInfo("veth12ab", UP_MC, ("169.254.3.3",), 7, virtual=True),
    InterfaceInfo("tun0", UP_MC, ("10.8.0.2",), 8, virtual=True),
    InterfaceInfo("wg0", IFF_UP, ("10.9.0.2",), 9, virtual=True),
    InterfaceInfo("cali12", UP_MC, ("10.1.0.1",), 10, virtual=True),
    InterfaceInfo("eth1", UP_MC, ("203.0.113.7",), 11),  # public only
    InterfaceInfo("eth2", IFF_UP | 0x2, ("192.168.2.2",), 12),  # no IFF_MULTICAST
    InterfaceInfo("eth3", IFF_MULTICAST, ("192.168.3.3",), 13),  # down
    InterfaceInfo("br0", UP_MC, ("192.168.50.2", "fd12::2"), 14, virtual=True, devtype="bridge"),
    InterfaceInfo("dummy0", UP_MC, ("192.168.60.1",), 15, virtual=True),
    InterfaceInfo("gtx0", UP_MC, ("192.168.70.1",), 16, virtual=True),  # a veth not named veth*
)


def test_default_selection_picks_lan_interfaces_only():
    chosen = {i.name: i for i in select_interfaces(LAN_SNAPSHOT)}
    assert sorted(chosen) == ["br0", "eth0", "wlan0"]
    assert chosen["eth0"].ipv4 == ("192.168.1.20",)
    # routable IPv6 is published, link-local IPv6 is not when something better exists
    assert chosen["eth0"].ipv6 == ("2001:db8::20",)
    assert chosen["br0"].ipv6 == ("fd12::2",)
    assert not chosen["eth0"].explicit


def test_link_local_ipv6_only_interface_publishes_it():
    snap = _snap(InterfaceInfo("eth0", UP_MC, ("fe80::5",), 2))
    [eth0] = select_interfaces(snap)
    assert eth0.ipv6 == ("fe80::5",)


def test_ula_and_ipv4_link_local_count_as_lan():
    snap = _snap(
        InterfaceInfo("eth0", UP_MC, ("fd00::7",), 2),
        InterfaceInfo("eth1", UP_MC, ("169.254.10.10",), 3),
        InterfaceInfo("eth2", UP_MC, ("2001:db8::1", "198.51.100.1"), 4),
    )
    assert [i.name for i in select_interfaces(snap)] == ["eth0", "eth1"]


def test_override_selects_exactly_named_interfaces_even_public_or_vpn():
    chosen = select_interfaces(LAN_SNAPSHOT, ["eth1", "tun0"])
    assert [i.name for i in chosen] == ["eth1", "tun0"]
    assert chosen[0].ipv4 == ("203.0.113.7",)
    assert all(i.explicit for i in chosen)


def test_override_of_down_interface_is_inactive_until_up():
    [eth3] = select_interfaces(LAN_SNAPSHOT, ["eth3"])
    assert eth3.name == "eth3" and eth3.addresses == ()


def test_override_by_address():
    chosen = select_interfaces(LAN_SNAPSHOT, ["10.0.0.5", "fd12::2"])
    assert [i.name for i in chosen] == ["br0", "wlan0"]


@pytest.mark.parametrize("entry", ["eth9", "192.168.99.99"])
def test_override_unknown_entry_is_a_usage_error_naming_it(entry):
    with pytest.raises(UsageError) as err:
        select_interfaces(LAN_SNAPSHOT, ["eth0", entry])
    assert entry in err.value.message
    assert "eth0" in (err.value.hint or "")


def test_override_missing_ok_skips_absent_interfaces():
    assert [i.name for i in select_interfaces(LAN_SNAPSHOT, ["eth9", "eth0"], missing_ok=True)] == ["eth0"]


def test_start_rejects_unknown_interface_without_opening_sockets():
    async def run():
        adv = MdnsAdvertiser(["nope0"], snapshot_fn=lambda: dict(LAN_SNAPSHOT))
        await adv.start()

    with pytest.raises(UsageError, match="nope0"):
        asyncio.run(run())


def test_names():
    assert mdns_base_name("myapp") == "myapp"
    assert mdns_base_name("*.myapp") == "myapp"
    assert mdns_base_name("MyApp.local.") == "myapp"
    assert candidates("myapp", 2) == ["myapp-2", "myapp-3"]
    err = NameConflict("myapp", "myapp-2", "another host answers A myapp.local.")
    assert isinstance(err, GotunnelError)
    assert "myapp.local" in err.message and "myapp-2" in (err.hint or "")


# --- resolver check parsing (pure) ----------------------------------------------------

DEBIAN_NSSWITCH = """\
# /etc/nsswitch.conf
passwd:         files systemd
#hosts:         files dns
hosts:          files mdns4_minimal [NOTFOUND=return] dns myhostname
networks:       files
"""
UBUNTU_RESOLVED_NSSWITCH = "passwd: files\nhosts: files resolve [!UNAVAIL=return] dns myhostname\n"
PLAIN_NSSWITCH = "hosts: files dns\n"

RESOLVECTL_MDNS_ON = "Global: yes\nLink 2 (eth0): yes\nLink 3 (docker0): no\n"
RESOLVECTL_MDNS_OFF = "Global: no\nLink 2 (eth0): no\n"
RESOLVECTL_MDNS_LINKS_OFF = "Global: yes\nLink 2 (eth0): no\n"
RESOLVECTL_STATUS_NEW = """\
Global
           Protocols: -LLMNR +mDNS -DNSOverTLS DNSSEC=no/unsupported
    resolv.conf mode: stub

Link 2 (wlp2s0)
    Current Scopes: DNS mDNS/IPv4 mDNS/IPv6
         Protocols: +DefaultRoute -LLMNR +mDNS -DNSOverTLS DNSSEC=no/unsupported
"""
RESOLVECTL_STATUS_OLD = """\
Global
       LLMNR setting: yes
MulticastDNS setting: no

Link 2 (eth0)
      Current Scopes: DNS
MulticastDNS setting: no
"""


def test_parse_nsswitch_hosts():
    assert parse_nsswitch_hosts(DEBIAN_NSSWITCH) == ["files", "mdns4_minimal", "dns", "myhostname"]
    assert nss_modules(parse_nsswitch_hosts(DEBIAN_NSSWITCH)) == (True, False)
    assert nss_modules(parse_nsswitch_hosts(UBUNTU_RESOLVED_NSSWITCH)) == (False, True)
    assert nss_modules(parse_nsswitch_hosts(PLAIN_NSSWITCH)) == (False, False)
    assert nss_modules(["files", "mdns_minimal", "dns"]) == (True, False)
    assert nss_modules(["files", "mdns"]) == (True, False)
    assert parse_nsswitch_hosts("passwd: files\n") == []


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (RESOLVECTL_MDNS_ON, True),
        (RESOLVECTL_MDNS_OFF, False),
        (RESOLVECTL_MDNS_LINKS_OFF, False),
        ("Global: resolve\nLink 2 (eth0): resolve\n", True),
        (RESOLVECTL_STATUS_NEW, True),
        (RESOLVECTL_STATUS_OLD, False),
        ("garbage\n", None),
        ("", None),
    ],
)
def test_parse_resolvectl_mdns(output, expected):
    assert parse_resolvectl_mdns(output) is expected


def test_evaluate_verdicts_and_hints():
    ok = evaluate(DEBIAN_NSSWITCH, None, avahi=True)
    assert ok.ok and ok.nss_mdns and ok.hint is None
    no_avahi = evaluate(DEBIAN_NSSWITCH, None, avahi=False)
    assert no_avahi.verdict == "broken" and "avahi-daemon" in no_avahi.hint
    resolved = evaluate(UBUNTU_RESOLVED_NSSWITCH, True, avahi=False)
    assert resolved.ok
    resolved_off = evaluate(UBUNTU_RESOLVED_NSSWITCH, False, avahi=False)
    assert resolved_off.verdict == "broken" and "MulticastDNS=yes" in resolved_off.hint
    missing = evaluate(PLAIN_NSSWITCH, None, avahi=False)
    assert missing.verdict == "missing" and "sudo apt install libnss-mdns avahi-daemon" in missing.hint
    avahi_only = evaluate(PLAIN_NSSWITCH, None, avahi=True)
    assert avahi_only.verdict == "missing" and "libnss-mdns" in avahi_only.hint
    no_file = evaluate(None, None, avahi=False)
    assert no_file.verdict == "missing" and any("not found" in d for d in no_file.details)


# --- network namespace tests ----------------------------------------------------------


def _can_use_netns() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class NetnsPair:
    a: str
    b: str
    a_if: str
    b_if: str
    prefix: str  # e.g. "192.168.123."
    a_addr: str
    b_addr: str


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    suffix = secrets.token_hex(3)
    a, b = f"gt-a-{suffix}", f"gt-b-{suffix}"
    prefix = f"192.168.{random.randint(100, 250)}."
    pair = NetnsPair(a, b, "gta0", "gtb0", prefix, prefix + "1", prefix + "2")
    created: list[str] = []
    try:
        for ns in (a, b):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"`ip netns add` does not work here: {exc.stderr.strip()}")
            created.append(ns)
        _ip("link", "add", pair.a_if, "netns", a, "type", "veth", "peer", "name", pair.b_if, "netns", b)
        for ns, ifname, addr in ((a, pair.a_if, pair.a_addr), (b, pair.b_if, pair.b_addr)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname)
            # keep a secondary address when the primary one is deleted (kernel default: drop it)
            subprocess.run(
                ["ip", "netns", "exec", ns, "sh", "-c",
                 f"echo 1 > /proc/sys/net/ipv4/conf/{ifname}/promote_secondaries"],
                check=True, timeout=10,
            )
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class Proc:
    """A helper script in a namespace, talking JSON lines; stopped by pid at teardown."""

    def __init__(self, ns: str, script: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HELPERS / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.stderr.append(line)

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def mark(self) -> int:
        """Position in `seen`; pass it as `since` to also match messages already read."""
        return len(self.seen)

    def wait_for(
        self, pred: Callable[[dict], bool], timeout: float, what: str, since: int | None = None
    ) -> dict:
        if since is not None:
            for msg in self.seen[since:]:
                if pred(msg):
                    return msg
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; saw {self.seen}\n"
                    f"stderr: {''.join(self.stderr)[-3000:]}"
                )
            try:
                msg = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"helper exited ({self.popen.returncode}) while waiting for {what}; "
                        f"saw {self.seen}\nstderr: {''.join(self.stderr)[-3000:]}"
                    ) from None
                continue
            self.seen.append(msg)
            if pred(msg):
                return msg

    def send(self, **cmd: object) -> dict:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(cmd) + "\n")
        self.popen.stdin.flush()
        return self.wait_for(lambda m: "ok" in m, 20, f"reply to {cmd}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # by pid
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(ns: str, script: str, *args: str) -> Proc:
        p = Proc(ns, script, *args)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in reversed(started):
            p.stop()


def _advertiser(procs, ns: str, ifname: str, *extra: str) -> Proc:
    adv = procs(ns, "advertise.py", "--iface", ifname, "--poll", "0.5", *extra)
    adv.wait_for(lambda m: m.get("event") == "ready", 20, "advertiser ready")
    return adv


def _resolver(procs, ns: str, addr: str) -> Proc:
    res = procs(ns, "resolve.py", "--addr", addr, "--host", "myapp.local.")
    res.wait_for(lambda m: m.get("event") == "ready", 20, "resolver ready")
    return res


def _addrs_are(expected: set[str]) -> Callable[[dict], bool]:
    return lambda m: m.get("event") == "addrs" and set(m["addrs"]) == expected


@pytest.mark.root
def test_publish_resolves_from_other_namespace_and_withdraw_sends_goodbyes(netns_pair, procs):
    ns = netns_pair
    res = _resolver(procs, ns.b, ns.b_addr)
    adv = _advertiser(procs, ns.a, ns.a_if, "--uvloop")  # the daemon's loop may be uvloop
    reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=8443, path="/")
    assert reply["ok"], reply
    assert reply["published"]["myapp"]["interfaces"] == {ns.a_if: [ns.a_addr]}

    start = res.mark()
    res.wait_for(_addrs_are({ns.a_addr}), 10, f"myapp.local -> {ns.a_addr}", since=start)
    https = res.wait_for(
        lambda m: m.get("event") == "service" and m["type"] == "_https._tcp.local.",
        10,
        "_https._tcp service",
        since=start,
    )
    assert https["name"] == "myapp._https._tcp.local."
    assert https["port"] == 8443
    assert https["txt"] == {"path": "/"}
    assert https["server"] == "myapp.local."
    assert https["addresses"] == [ns.a_addr]
    http = res.wait_for(
        lambda m: m.get("event") == "service" and m["type"] == "_http._tcp.local.", 10, "_http", since=start
    )
    assert http["port"] == 8080

    t0 = time.monotonic()
    assert adv.send(op="withdraw", name="myapp")["ok"]
    # host TTL is 120 s; only goodbye packets can remove the record this fast
    res.wait_for(lambda m: m.get("event") == "service_removed" and m["type"] == "_https._tcp.local.", 3, "goodbye")
    res.wait_for(_addrs_are(set()), max(0.5, 3 - (time.monotonic() - t0)), "address goodbye")
    assert time.monotonic() - t0 < 3
    # observation window: an answer zeroconf queued before the withdraw must not go out
    # after the goodbyes and bring the record back (the resolver queries every second)
    mark = res.mark()
    with pytest.raises(AssertionError, match="timed out"):
        res.wait_for(lambda m: m.get("event") == "addrs" and m["addrs"], 1.5, "a resurrected record")
    assert all(not m.get("addrs") for m in res.seen[mark:] if m.get("event") == "addrs")

    # our own goodbyes must not count as a conflict when the name comes back
    reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=8443)
    assert reply["ok"], reply
    res.wait_for(_addrs_are({ns.a_addr}), 5, "re-published address")


@pytest.mark.root
def test_close_sends_goodbyes(netns_pair, procs):
    ns = netns_pair
    res = _resolver(procs, ns.b, ns.b_addr)
    adv = _advertiser(procs, ns.a, ns.a_if)
    assert adv.send(op="publish", name="myapp", http_port=8080, https_port=None)["ok"]
    res.wait_for(_addrs_are({ns.a_addr}), 10, "address")
    t0 = time.monotonic()
    assert adv.send(op="close")["ok"]
    res.wait_for(_addrs_are(set()), 3, "goodbye on close")
    assert time.monotonic() - t0 < 3


@pytest.mark.root
def test_conflicting_name_raises_with_suggestion(netns_pair, procs):
    ns = netns_pair
    other = _advertiser(procs, ns.b, ns.b_if)
    assert other.send(op="publish", name="myapp", http_port=9000, https_port=None)["ok"]
    adv = _advertiser(procs, ns.a, ns.a_if)
    reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=8443)
    assert reply["ok"] is False, reply
    assert reply["error"] == "NameConflict"
    assert "myapp.local" in reply["message"]
    assert reply["suggestion"] == "myapp-2"
    assert "myapp-2" in reply["hint"]
    # the suggestion really is free
    reply = adv.send(op="publish", name="myapp-2", http_port=8080, https_port=8443)
    assert reply["ok"], reply
    # once the other host lets go (goodbyes), the name can be claimed
    assert other.send(op="withdraw", name="myapp")["ok"]
    reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=8443)
    assert reply["ok"], reply


@pytest.mark.root
def test_address_changes_are_announced_within_seconds(netns_pair, procs):
    ns = netns_pair
    res = _resolver(procs, ns.b, ns.b_addr)
    adv = _advertiser(procs, ns.a, ns.a_if)
    assert adv.send(op="publish", name="myapp", http_port=8080, https_port=8443)["ok"]
    res.wait_for(_addrs_are({ns.a_addr}), 10, "first address")

    extra = ns.prefix + "77"
    _ip("-n", ns.a, "addr", "add", f"{extra}/24", "dev", ns.a_if)
    res.wait_for(_addrs_are({ns.a_addr, extra}), 5, "second address announced")

    # removing the address our sockets are bound to moves the responder to the other one
    _ip("-n", ns.a, "addr", "del", f"{ns.a_addr}/24", "dev", ns.a_if)
    res.wait_for(_addrs_are({extra}), 5, "removed address withdrawn")


@pytest.mark.root
def test_dual_stack_publishes_aaaa_and_answers_over_ipv6(netns_pair, procs):
    ns = netns_pair
    # ULA addresses; nodad so they are usable at once (no duplicate address detection wait)
    _ip("-n", ns.a, "addr", "add", "fd42:6774::1/64", "dev", ns.a_if, "nodad")
    _ip("-n", ns.b, "addr", "add", "fd42:6774::2/64", "dev", ns.b_if, "nodad")
    res = _resolver(procs, ns.b, "fd42:6774::2")  # this querier speaks IPv6 only
    adv = _advertiser(procs, ns.a, ns.a_if)
    reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=8443)
    assert reply["published"]["myapp"]["interfaces"] == {ns.a_if: [ns.a_addr, "fd42:6774::1"]}
    res.wait_for(_addrs_are({ns.a_addr, "fd42:6774::1"}), 10, "A and AAAA over IPv6", since=0)


@pytest.mark.root
def test_each_link_hears_only_its_own_addresses(netns_pair, procs):
    """A has a second link to a third namespace C; B must never see A's C-side address."""
    ns = netns_pair
    c = ns.b.replace("gt-b-", "gt-c-")
    c_prefix = "10.77.{}.".format(random.randint(1, 250))
    a_if2, c_if = "gta1", "gtc0"
    in_c: list[Proc] = []
    try:
        _ip("netns", "add", c)
        _ip("link", "add", a_if2, "netns", ns.a, "type", "veth", "peer", "name", c_if, "netns", c)
        for n, ifname, addr in ((ns.a, a_if2, c_prefix + "1"), (c, c_if, c_prefix + "2")):
            _ip("-n", n, "link", "set", "lo", "up")
            _ip("-n", n, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", n, "link", "set", ifname, "up")
        _ip("-n", c, "route", "add", "224.0.0.0/4", "dev", c_if)
        res_b = _resolver(procs, ns.b, ns.b_addr)
        res_c = _resolver(procs, c, c_prefix + "2")
        in_c.append(res_c)
        adv = procs(ns.a, "advertise.py", "--iface", ns.a_if, "--iface", a_if2, "--poll", "0.5")
        adv.wait_for(lambda m: m.get("event") == "ready", 20, "advertiser ready")
        reply = adv.send(op="publish", name="myapp", http_port=8080, https_port=None)
        assert reply["published"]["myapp"]["interfaces"] == {ns.a_if: [ns.a_addr], a_if2: [c_prefix + "1"]}
        res_b.wait_for(_addrs_are({ns.a_addr}), 10, "B-side address on B", since=0)
        res_c.wait_for(_addrs_are({c_prefix + "1"}), 10, "C-side address on C", since=0)
        # observation window (not synchronisation): both resolvers keep querying once a
        # second, and no cross-link address may show up meanwhile
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            time.sleep(0.1)
        for res, own in ((res_b, ns.a_addr), (res_c, c_prefix + "1")):
            while not res.lines.empty():
                res.seen.append(res.lines.get_nowait())
            seen = {a for m in res.seen if m.get("event") == "addrs" for a in m["addrs"]}
            assert seen == {own}, res.seen
    finally:
        for p in in_c:  # the rest are stopped by the procs fixture
            p.stop()
        subprocess.run(["ip", "netns", "del", c], capture_output=True, timeout=10)
