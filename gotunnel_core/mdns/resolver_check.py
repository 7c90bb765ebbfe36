"""`gotunnel doctor`: does *this* machine resolve `.local` names (so NAME.local works here)?

Two setups make glibc programs resolve `.local` over mDNS on Linux:
  * nss-mdns (`mdns`, `mdns4_minimal`, `mdns_minimal`, ... on the `hosts:` line of
    /etc/nsswitch.conf) together with a running avahi-daemon, which it talks to; or
  * nss-resolve (`resolve`) with systemd-resolved's MulticastDNS enabled globally and on
    at least one link.
The parsing functions are pure so they are tested on sample file contents.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

_MDNS_MODULES = re.compile(r"^mdns[46]?(_minimal)?$")
_YES = {"yes", "resolve"}  # "resolve": resolves but does not respond; enough for us


@dataclass(frozen=True)
class ResolverCheck:
    """Verdict: "ok" (resolves .local), "broken" (configured but not working), "missing"."""

    verdict: str
    nss_mdns: bool
    nss_resolve: bool
    avahi_running: bool
    resolved_mdns: bool | None  # None: resolvectl absent or unparsable
    hint: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def parse_nsswitch_hosts(text: str) -> list[str]:
    """Sources on the `hosts:` line, in order, without `[NOTFOUND=return]` actions."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("hosts:"):
            continue
        rest = re.sub(r"\[[^\]]*\]", " ", line[len("hosts:"):])
        return rest.split()
    return []


def nss_modules(sources: Iterable[str]) -> tuple[bool, bool]:
    """(uses nss-mdns, uses nss-resolve) for a list of hosts sources."""
    sources = list(sources)
    return any(_MDNS_MODULES.match(s) for s in sources), "resolve" in sources


def parse_resolvectl_mdns(output: str) -> bool | None:
    """Whether systemd-resolved resolves mDNS, from `resolvectl mdns` or `resolvectl status`.

    Accepts `Global: yes` / `Link 2 (eth0): no` lines (`resolvectl mdns`), the old
    `MulticastDNS setting: yes` lines and the newer `Protocols: ... +mDNS ...` lines. True
    needs the global setting on and, when links are listed, at least one link on.
    """
    global_on: bool | None = None
    links: list[bool] = []
    section = "global"
    for raw in output.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"^(Global|Link\s+\d+\s*\([^)]*\))\s*:\s*(\S+)?\s*$", line)
        if m and m.group(2):
            on = m.group(2).lower() in _YES
            if m.group(1) == "Global":
                global_on = on
            else:
                links.append(on)
            continue
        if m or re.match(r"^(Global|Link\s+\d+)", line):
            section = "global" if line.startswith("Global") else "link"
            continue
        value: bool | None = None
        m = re.match(r"^MulticastDNS setting:\s*(\S+)", line)
        if m:
            value = m.group(1).lower() in _YES
        elif line.startswith("Protocols:"):
            m = re.search(r"(?:^|\s)([+-])mDNS\b|\bmDNS=(\w+)", line)
            if m:
                value = m.group(1) == "+" if m.group(1) else m.group(2).lower() in _YES
        if value is None:
            continue
        if section == "global":
            global_on = value
        else:
            links.append(value)
    if global_on is None:
        return None if not links else any(links)
    return global_on and (not links or any(links))


def avahi_running(process_names: Iterable[str]) -> bool:
    return any(n == "avahi-daemon" or n.startswith("avahi-daemon") for n in process_names)


def evaluate(
    nsswitch_text: str | None, resolved_mdns: bool | None, avahi: bool
) -> ResolverCheck:
    """Combine the observations into a verdict with an actionable hint (pure)."""
    details: list[str] = []
    if nsswitch_text is None:
        details.append("/etc/nsswitch.conf not found")
        sources: list[str] = []
    else:
        sources = parse_nsswitch_hosts(nsswitch_text)
        details.append(f"nsswitch hosts: {' '.join(sources) or '(none)'}")
    mdns, resolve = nss_modules(sources)
    details.append(f"avahi-daemon {'running' if avahi else 'not running'}")
    if resolved_mdns is not None:
        details.append(f"systemd-resolved MulticastDNS {'on' if resolved_mdns else 'off'}")
    result: dict[str, Any] = dict(nss_mdns=mdns, nss_resolve=resolve, avahi_running=avahi, resolved_mdns=resolved_mdns)

    if mdns and avahi:
        return ResolverCheck("ok", details=details, **result)
    if resolve and resolved_mdns:
        return ResolverCheck("ok", details=details, **result)
    if mdns:
        return ResolverCheck(
            "broken",
            hint="nss-mdns is configured but avahi-daemon is not running: sudo systemctl enable --now avahi-daemon",
            details=details,
            **result,
        )
    if resolve and resolved_mdns is False:
        return ResolverCheck(
            "broken",
            hint=(
                "systemd-resolved has mDNS off: set MulticastDNS=yes in /etc/systemd/resolved.conf, "
                "run `sudo systemctl restart systemd-resolved` and `sudo resolvectl mdns <interface> yes` "
                "(or use avahi: sudo apt install libnss-mdns avahi-daemon)"
            ),
            details=details,
            **result,
        )
    hint = (
        "this machine does not resolve .local names: sudo apt install libnss-mdns avahi-daemon "
        "(Fedora: sudo dnf install nss-mdns avahi; Arch: sudo pacman -S nss-mdns avahi and add "
        "mdns_minimal [NOTFOUND=return] before dns on the hosts: line of /etc/nsswitch.conf)"
    )
    if avahi and not mdns:
        hint = (
            "avahi-daemon runs but nsswitch.conf does not use it: sudo apt install libnss-mdns "
            "(or add mdns4_minimal [NOTFOUND=return] before dns on the hosts: line)"
        )
    return ResolverCheck("missing", hint=hint, details=details, **result)


def _resolvectl_mdns(run: Callable[..., subprocess.CompletedProcess]) -> bool | None:
    exe = shutil.which("resolvectl")
    if exe is None:
        return None
    for args in ([exe, "mdns"], [exe, "status"]):
        try:
            proc = run(args, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            value = parse_resolvectl_mdns(proc.stdout)
            if value is not None:
                return value
    return None


def _process_names() -> list[str]:
    import psutil

    names = []
    for p in psutil.process_iter(["name"]):
        name = p.info.get("name")
        if name:
            names.append(name)
    return names


def check_local_resolution(
    nsswitch_path: str = "/etc/nsswitch.conf",
    *,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    process_names: Callable[[], list[str]] = _process_names,
) -> ResolverCheck:
    """Inspect this machine (nsswitch.conf, resolvectl, process list) and judge."""
    try:
        text: str | None = Path(nsswitch_path).read_text()
    except OSError:
        text = None
    return evaluate(text, _resolvectl_mdns(run), avahi_running(process_names()))
