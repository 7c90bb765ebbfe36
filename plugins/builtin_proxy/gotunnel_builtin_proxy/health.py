"""Active health checks: GET the check path on each backend every interval, flip on thresholds."""

from __future__ import annotations

import asyncio
import ssl

from gotunnel_core.models import HealthCheck

from .balancer import BackendState

_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


async def probe(state: BackendState, check: HealthCheck) -> tuple[bool, str]:
    """One check: a 2xx/3xx answer within the timeout is healthy."""
    b = state.backend
    writer = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(
                b.host, b.port, ssl=_INSECURE if b.scheme == "https" else None,
                server_hostname=b.host if b.scheme == "https" else None,
            )
            writer.write(
                f"GET {b.path}{check.path} HTTP/1.1\r\nHost: {b.address}\r\n"
                "User-Agent: gotunnel-health\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            line = await reader.readline()
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1][:1] in (b"2", b"3"):
            return True, ""
        return False, f"health check answered {line.strip().decode('latin-1', 'replace')[:80]!r}"
    except TimeoutError:
        return False, "health check timed out"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    finally:
        if writer is not None:
            writer.close()


def record(state: BackendState, check: HealthCheck, ok: bool, reason: str) -> None:
    """Count consecutive results; cross a threshold -> change the backend's verdict."""
    if ok:
        state.failures = 0
        state.successes += 1
        if not state.healthy and state.successes >= check.healthy_threshold:
            state.healthy = True
        if state.healthy:
            state.ejected_until = 0.0
    else:
        state.successes = 0
        state.failures += 1
        state.last_error = reason
        if state.healthy and state.failures >= check.unhealthy_threshold:
            state.healthy = False


async def run_checks(state: BackendState, check: HealthCheck) -> None:
    """Check forever (cancelled by the engine when the backend leaves the table)."""
    while True:
        ok, reason = await probe(state, check)
        record(state, check, ok, reason)
        await asyncio.sleep(check.interval)
