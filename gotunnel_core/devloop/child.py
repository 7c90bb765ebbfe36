"""The command `gotunnel run` starts: its own process group, signals forwarded, its exit status kept.

The child gets the terminal as is (its output reaches the user unchanged, colours included) and
runs in its own process group, so a signal for `gotunnel run` (SIGINT, SIGTERM, SIGHUP) reaches
the whole dev server (npm -> node -> esbuild) exactly once, forwarded by us. When gotunnel runs in
the foreground of a terminal, the child's group becomes the terminal's foreground group, as a
shell does for a job: Ctrl-C then goes straight to it, and a dev server that reads keys from
stdin (Vite's shortcuts) is not stopped for reading from a background group. Ctrl-Z stops the
child; gotunnel then stops too and resumes it on `fg`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

from ..errors import UsageError

#: Signals forwarded to the child's process group.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: After gotunnel itself was told to stop (SIGTERM/SIGHUP), how long the child may take to exit
#: before its whole group is killed.
STOP_GRACE = 10.0


def _terminal_fd() -> int | None:
    """stdin's descriptor when gotunnel runs in the foreground of a terminal, else None."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None


@contextlib.contextmanager
def _ignoring_sigttou() -> Iterator[None]:
    """A background process that changes the terminal's foreground group gets SIGTTOU: ignore it."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTTOU, previous)


def exit_status(returncode: int) -> int:
    """The shell's convention: the exit code, or 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class Child:
    """One started command in its own process group."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> None:
        self.terminal = _terminal_fd()
        terminal = self.terminal

        def give_terminal() -> None:  # in the child, before exec: no race with its first read
            if terminal is not None:
                with contextlib.suppress(OSError):
                    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                    os.tcsetpgrp(terminal, os.getpgrp())
                    signal.signal(signal.SIGTTOU, signal.SIG_DFL)

        try:
            self.proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, process_group=0,
                                         preexec_fn=give_terminal if terminal is not None else None)
        except FileNotFoundError:
            raise UsageError(f"command not found: {argv[0]!r}", hint="check the command after `gotunnel run --`") from None
        except PermissionError:
            raise UsageError(f"command not executable: {argv[0]!r}") from None
        self.pid = self.proc.pid
        self.pgid = self.pid
        self.returncode: int | None = None
        self.stop_requested_at: float | None = None
        if terminal is not None:
            with _ignoring_sigttou(), contextlib.suppress(OSError):
                os.tcsetpgrp(terminal, self.pgid)
        self._previous: dict[int, Any] = {}
        for sig in FORWARDED:
            self._previous[sig] = signal.signal(sig, self._forward)

    def _forward(self, signum: int, _frame: Any) -> None:
        """Pass a signal on to the child's group; SIGTERM/SIGHUP for us also start the stop deadline."""
        self.signal(signum)
        if signum != signal.SIGINT and self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signum)

    def poll(self) -> int | None:
        """The child's return code once it exited (without waiting), else None. Handles Ctrl-Z."""
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            self.returncode = self.proc.returncode if self.proc.returncode is not None else 0
            return self.returncode
        if pid == 0:
            self._kill_after_grace()
            return None
        if os.WIFSTOPPED(status):
            self._suspend_with_child()
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        return self.returncode

    def wait(self, poll_interval: float = 0.1) -> int:
        """Wait for the child to exit (forwarding signals meanwhile); its return code."""
        while (code := self.poll()) is None:
            time.sleep(poll_interval)
        return code

    def _kill_after_grace(self) -> None:
        if self.stop_requested_at is not None and time.monotonic() - self.stop_requested_at > STOP_GRACE:
            self.signal(signal.SIGKILL)

    def _suspend_with_child(self) -> None:
        """The child was stopped (Ctrl-Z): hand the terminal back, stop ourselves; on resume, resume it."""
        if self.terminal is not None:
            with _ignoring_sigttou(), contextlib.suppress(OSError):
                os.tcsetpgrp(self.terminal, os.getpgrp())
        os.kill(os.getpid(), signal.SIGSTOP)
        if self.terminal is not None:
            with _ignoring_sigttou(), contextlib.suppress(OSError):
                os.tcsetpgrp(self.terminal, self.pgid)
        self.signal(signal.SIGCONT)

    def _exited(self) -> bool:
        """Whether the child exited, without reaping it (its zombie keeps the group id ours)."""
        if self.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def stop(self, grace: float = STOP_GRACE) -> int:
        """Stop the child's whole group: SIGTERM, then after `grace` (or once the child exited)
        SIGKILL for whatever of the group is left; its return code."""
        if self.returncode is None:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.signal(signal.SIGKILL)  # the unreaped leader still holds the group id: never someone else's
        return self.wait(0.02)

    def close(self) -> None:
        """Restore our signal handlers and take the terminal back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self.terminal is not None:
            with _ignoring_sigttou(), contextlib.suppress(OSError):
                os.tcsetpgrp(self.terminal, os.getpgrp())
