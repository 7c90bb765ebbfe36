"""Tests for gotunnel_core.hosts: byte-exact preservation, exact matching, locking, atomicity, permissions."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import pwd
import random
import select
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotunnel_core import hosts as hosts_mod
from gotunnel_core.errors import PermissionProblem, RuntimeFailure, ValidationError
from gotunnel_core.hosts import HostsFile, default_hosts_path

REPO = Path(__file__).resolve().parents[1]
BEGIN = b"# BEGIN gotunnel"
END = b"# END gotunnel"

UNUSUAL = (
    b"# /etc/hosts: static table\r\n"
    b"127.0.0.1\tlocalhost\r\n"
    b"\n"
    b"  \t# indented comment with caf\xe9 (latin-1)\n"
    b"::1     localhost ip6-localhost\r\n"
    b"\n\n"
    b"10.0.0.5\tapp.local   # user's own line\n"
    b"192.168.1.2 printer.lan"  # no trailing newline
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _has_marker_line(data: bytes) -> bool:
    """Independent of the module's regex: a line that strips to a marker."""
    return any(line.strip() in (BEGIN, END) for line in data.split(b"\n"))


def _block_of(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Split `data` into (before, block, after) by line-wise scanning; asserts exactly one block."""
    lines = data.split(b"\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    assert len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0], data[-500:]
    before = b"\n".join(lines[: begins[0]]) + (b"\n" if begins[0] else b"")
    block_lines = lines[begins[0] : ends[0] + 1]
    rest = lines[ends[0] + 1 :]
    block = b"\n".join(block_lines) + (b"\n" if rest else b"")
    after = b"\n".join(rest)
    assert before + block + after == data
    return before, block, after


def _tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(hosts_mod.TEMP_SUFFIX))


@pytest.fixture
def hosts_path(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_bytes(UNUSUAL)
    return path


# --- byte-exact preservation --------------------------------------------------------------------


def test_add_then_clean_restores_exact_bytes(hosts_path: Path) -> None:
    hf = HostsFile(hosts_path)
    assert hf.add(["myapp.local", "myapp.localhost"]) is True
    data = hosts_path.read_bytes()
    # The only bytes outside the block are the line break we had to add before it, in the
    # file's own style (its first line ends in CRLF).
    assert data.startswith(UNUSUAL + b"\r\n" + BEGIN + b"\r\n")
    before, block, after = _block_of(data)
    assert before == UNUSUAL + b"\r\n" and after == b""
    assert b"127.0.0.1\tmyapp.local\r\n::1\tmyapp.local\r\n" in block
    assert b"127.0.0.1\tmyapp.localhost\r\n::1\tmyapp.localhost\r\n" in block
    assert hf.entries() == ["myapp.local", "myapp.localhost"]
    assert hf.clean() is True
    assert hosts_path.read_bytes() == UNUSUAL
    assert hf.clean() is False


def test_removing_last_name_removes_block_and_restores_bytes(hosts_path: Path) -> None:
    hf = HostsFile(hosts_path)
    hf.add(["a.local"])
    hf.add(["b.local"])
    assert hf.remove(["a.local", "b.local"]) is True
    assert hosts_path.read_bytes() == UNUSUAL
    hf.add(["a.local"])
    assert hf.sync([]) is True
    assert hosts_path.read_bytes() == UNUSUAL


def test_file_ending_in_newline_gets_no_extra_bytes(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    original = b"127.0.0.1 localhost\n"
    path.write_bytes(original)
    hf = HostsFile(path)
    hf.add(["x.local"])
    data = path.read_bytes()
    assert data.startswith(original + BEGIN) and data.endswith(END + b"\n")
    assert hosts_mod.SEPARATOR_NOTE not in data
    hf.clean()
    assert path.read_bytes() == original


def test_crlf_file_gets_crlf_block(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    original = b"127.0.0.1 localhost\r\n::1 localhost\r\n"
    path.write_bytes(original)
    hf = HostsFile(path)
    hf.add(["x.local"])
    data = path.read_bytes()
    assert data == original + BEGIN + b"\r\n" + data[len(original) + len(BEGIN) + 2 :]
    assert b"127.0.0.1\tx.local\r\n::1\tx.local\r\n" + END + b"\r\n" in data
    assert hf.entries() == ["x.local"]
    hf.clean()
    assert path.read_bytes() == original


def test_entries_are_sorted_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"")
    HostsFile(a).add(["z.local", "m.local", "a.local"])
    HostsFile(b).add(["a.local"])
    HostsFile(b).add(["m.local", "z.local"])
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_bytes().split(b"\n")
    entries = [line for line in lines if line and not line.startswith(b"#")]
    assert entries == [
        b"127.0.0.1\ta.local", b"::1\ta.local",
        b"127.0.0.1\tm.local", b"::1\tm.local",
        b"127.0.0.1\tz.local", b"::1\tz.local",
    ]  # fmt: skip
    HostsFile(a).clean()
    assert a.read_bytes() == b""


def test_block_in_the_middle_keeps_surroundings(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    prefix = b"# top\r\n127.0.0.1\tlocalhost\r\n\t\n"
    suffix = b"\n# user added after us\n10.1.1.1 after.lan\xff"
    block = BEGIN + b"\n127.0.0.1\told.local\n::1\told.local\n" + END + b"\n"
    path.write_bytes(prefix + block + suffix)
    hf = HostsFile(path)
    assert hf.entries() == ["old.local"]
    assert hf.add(["new.local"])
    data = path.read_bytes()
    assert data.startswith(prefix + BEGIN) and data.endswith(END + b"\n" + suffix)
    assert hf.entries() == ["new.local", "old.local"]
    assert hf.remove(["old.local"])
    assert hf.entries() == ["new.local"]
    assert path.read_bytes().endswith(END + b"\n" + suffix)
    assert hf.clean()
    assert path.read_bytes() == prefix + suffix


def test_separator_kept_when_user_appended_after_block(tmp_path: Path) -> None:
    """Dropping our separator would glue the user's old last line to what they appended."""
    path = tmp_path / "hosts"
    path.write_bytes(b"1.1.1.1 one.lan")
    hf = HostsFile(path)
    hf.add(["x.local"])
    with open(path, "ab") as fh:
        fh.write(b"2.2.2.2 two.lan\n")
    hf.clean()
    assert path.read_bytes() == b"1.1.1.1 one.lan\n2.2.2.2 two.lan\n"


_line = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from(
        [
            b"# comment",
            b"127.0.0.1\tlocalhost",
            b"::1 localhost",
            b"\t",
            b"",
            b"caf\xe9",
            b"\xff\xfe",
            b"# BEGIN gotunnelX",
            b"#END gotunnel",
            b"10.0.0.1 app.local myapp.local",
            hosts_mod.SEPARATOR_NOTE,
        ]
    ),
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r", b""])
_content = st.lists(st.tuples(_line, _eol), max_size=12).map(lambda parts: b"".join(a + b for a, b in parts))
_names = st.sets(st.from_regex(r"\A[a-z][a-z0-9-]{0,12}\.(local|localhost)\Z"), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=_content, names=_names, more=_names)
def test_roundtrip_arbitrary_content(original: bytes, names: set[str], more: set[str]) -> None:
    if _has_marker_line(original):
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hosts"
        path.write_bytes(original)
        hf = HostsFile(path)
        assert hf.add(names)
        assert hf.entries() == sorted(names)
        before, _, after = _block_of(path.read_bytes())
        assert after == b""
        assert before in (original, original + b"\n", original + b"\r\n")
        hf.add(more)
        assert hf.entries() == sorted(names | more)
        assert _block_of(path.read_bytes())[0] == before
        hf.remove(names)
        assert hf.entries() == sorted(more - names)
        hf.clean()
        assert path.read_bytes() == original


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_content, suffix=_content, names=_names)
def test_block_between_arbitrary_content(prefix: bytes, suffix: bytes, names: set[str]) -> None:
    if _has_marker_line(prefix) or _has_marker_line(suffix):
        return
    if prefix and not prefix.endswith(b"\n"):
        prefix += b"\n"
    block = BEGIN + b"\n127.0.0.1\tkeep.local\n" + END + b"\n"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hosts"
        path.write_bytes(prefix + block + suffix)
        hf = HostsFile(path)
        hf.add(names)
        data = path.read_bytes()
        assert data.startswith(prefix + BEGIN) and data.endswith(END + b"\n" + suffix)
        hf.sync([])
        assert path.read_bytes() == prefix + suffix


# --- exact matching ----------------------------------------------------------------------------


def test_remove_is_exact_match_not_substring(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    user_line = b"127.0.0.1 app.local\n"
    path.write_bytes(user_line)
    hf = HostsFile(path)
    hf.add(["app.local", "myapp.local", "app.localhost"])
    assert hf.remove(["app.local"]) is True
    assert hf.entries() == ["app.localhost", "myapp.local"]
    data = path.read_bytes()
    assert data.startswith(user_line)
    _, block, _ = _block_of(data)
    assert b"\tapp.local\n" not in block and b"\tmyapp.local\n" in block
    # Removing a name that is only in the user's own line changes nothing.
    hf.remove(["app.local"])
    assert hf.remove(["app.local"]) is False
    hf.clean()
    assert path.read_bytes() == user_line


def test_sync_sets_exact_contents(hosts_path: Path) -> None:
    hf = HostsFile(hosts_path)
    hf.add(["a.local", "b.local"])
    assert hf.sync(["b.local", "c.local"]) is True
    assert hf.entries() == ["b.local", "c.local"]
    assert hf.sync(["c.local", "b.local"]) is False


def test_no_write_when_nothing_changes(hosts_path: Path) -> None:
    hf = HostsFile(hosts_path)
    hf.add(["a.local"])
    before = hosts_path.stat()
    assert hf.add(["a.local"]) is False
    assert hf.remove(["zzz.local"]) is False
    assert hf.last_write_method == "none"
    after = hosts_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    hf = HostsFile(path)
    assert hf.entries() == []
    assert hf.clean() is False and not path.exists()
    assert hf.add(["a.local"]) and hf.entries() == ["a.local"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("bad", ["", " a.local", "a local", "a\tb", "a#b", "a\nb", "a\x00b", "a\x7fb", "café.local"])
def test_bad_names_refused(hosts_path: Path, bad: str) -> None:
    hf = HostsFile(hosts_path)
    for op in (hf.add, hf.remove, hf.sync):
        with pytest.raises(ValidationError):
            op(["ok.local", bad])
    assert hosts_path.read_bytes() == UNUSUAL


def test_single_string_refused(hosts_path: Path) -> None:
    with pytest.raises(TypeError):
        HostsFile(hosts_path).add("app.local")  # type: ignore[arg-type]


# --- malformed blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"1.1.1.1 a\n# BEGIN gotunnel\n127.0.0.1\tx.local\n",
        b"127.0.0.1\tx.local\n# END gotunnel\n",
        b"# END gotunnel\n# BEGIN gotunnel\n",
        b"# BEGIN gotunnel\n# END gotunnel\n# BEGIN gotunnel\n# END gotunnel\n",
        b"# BEGIN gotunnel\n# BEGIN gotunnel\n# END gotunnel\n",
    ],
    ids=["begin-without-end", "end-without-begin", "end-before-begin", "two-blocks", "double-begin"],
)
def test_malformed_block_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(content)
    hf = HostsFile(path)
    for op in (hf.entries, hf.clean, lambda: hf.add(["a.local"]), lambda: hf.remove(["x.local"])):
        with pytest.raises(RuntimeFailure, match="malformed") as info:
            op()
        assert str(path) in info.value.message and info.value.hint
    assert path.read_bytes() == content


# --- atomic replacement, metadata, bind mounts ---------------------------------------------------


def test_replaced_by_rename_keeps_mode_and_owner(hosts_path: Path) -> None:
    os.chmod(hosts_path, 0o640)
    if os.geteuid() == 0:
        os.chown(hosts_path, 4321, 4322)
    st0 = hosts_path.stat()
    hf = HostsFile(hosts_path)
    hf.add(["a.local"])
    assert hf.last_write_method == "rename"
    st1 = hosts_path.stat()
    assert st1.st_ino != st0.st_ino
    assert stat.S_IMODE(st1.st_mode) == 0o640
    assert (st1.st_uid, st1.st_gid) == (st0.st_uid, st0.st_gid)
    assert _tmp_files(hosts_path.parent) == []


def test_symlinked_hosts_file_keeps_link(tmp_path: Path) -> None:
    real = tmp_path / "real-hosts"
    real.write_bytes(b"127.0.0.1 localhost\n")
    link = tmp_path / "hosts"
    link.symlink_to(real)
    HostsFile(link).add(["a.local"])
    assert link.is_symlink() and b"a.local" in real.read_bytes()


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EBUSY])
def test_bind_mount_falls_back_to_in_place(
    hosts_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise OSError(code, os.strerror(code))

    ino = hosts_path.stat().st_ino
    monkeypatch.setattr(hosts_mod.os, "replace", refuse)
    hf = HostsFile(hosts_path)
    with caplog.at_level(logging.WARNING, logger="gotunnel_core.hosts"):
        assert hf.add(["a.local", "b.local"])
    assert hf.last_write_method == "in-place"
    assert "in place" in caplog.text
    assert hosts_path.stat().st_ino == ino
    assert hf.entries() == ["a.local", "b.local"]
    assert _tmp_files(hosts_path.parent) == []
    assert hf.clean()  # shrinking in place must truncate
    assert hosts_path.read_bytes() == UNUSUAL and hosts_path.stat().st_ino == ino


def test_other_rename_errors_propagate_and_leave_file(hosts_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(hosts_mod.os, "replace", broken)
    with pytest.raises(OSError):
        HostsFile(hosts_path).add(["a.local"])
    assert hosts_path.read_bytes() == UNUSUAL
    assert _tmp_files(hosts_path.parent) == []


def test_stale_temp_files_are_swept(hosts_path: Path) -> None:
    stale = hosts_path.parent / (".hosts.abc" + hosts_mod.TEMP_SUFFIX)
    stale.write_bytes(b"half")
    HostsFile(hosts_path).add(["a.local"])
    assert not stale.exists()


def test_default_hosts_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform != "win32":
        assert default_hosts_path() == Path("/etc/hosts")
    monkeypatch.setattr(hosts_mod.sys, "platform", "win32")
    monkeypatch.setenv("SystemRoot", r"D:\Win")
    assert default_hosts_path() == Path(r"D:\Win") / "System32" / "drivers" / "etc" / "hosts"


# --- processes: concurrency, locking, SIGKILL ----------------------------------------------------

_CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gotunnel_core.hosts import HostsFile
    path, me = Path(sys.argv[1]), sys.argv[2]
    hf = HostsFile(path, lock_timeout=60)
    hf.add([me + ".local"])
    for i in range(5):
        hf.add([me + "-tmp.local"])
        hf.remove([me + "-tmp.local"])
    """
)


def test_concurrent_writers_lose_nothing(hosts_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT_WRITER, str(hosts_path), f"w{i:02d}"], env=_env())
        for i in range(20)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    hf = HostsFile(hosts_path)
    assert hf.entries() == [f"w{i:02d}.local" for i in range(20)]
    assert hosts_path.read_bytes().startswith(UNUSUAL + b"\r\n" + BEGIN)
    hf.clean()
    assert hosts_path.read_bytes() == UNUSUAL


_LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from filelock import FileLock
    with FileLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_lock_timeout_is_reported(hosts_path: Path) -> None:
    lock_path = str(hosts_path) + hosts_mod.LOCK_SUFFIX
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, lock_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        with pytest.raises(RuntimeFailure, match="timed out"):
            HostsFile(hosts_path, lock_timeout=0.3).add(["a.local"])
        assert hosts_path.read_bytes() == UNUSUAL
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


_LOOPING_WRITER = textwrap.dedent(
    """
    import itertools, os, sys
    from pathlib import Path
    from gotunnel_core.hosts import HostsFile
    hf = HostsFile(Path(sys.argv[1]))
    tag = sys.argv[2]
    for i in itertools.count():
        # Every call changes the file: add a fresh name, then remove it again.
        name = f"k{tag}-{i - i % 2}.local"
        changed = hf.add([name]) if i % 2 == 0 else hf.remove([name])
        assert changed
        os.write(1, b"%d\\n" % i)
    """
)


def _wait_for_lines(proc: subprocess.Popen[bytes], count: int, deadline: float) -> None:
    """Poll the writer's stdout (with a deadline) until it reports `count` completed writes."""
    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), 0
    while seen < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "writer made no progress"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"writer exited early with {proc.poll()}"
            seen += chunk.count(b"\n")


@pytest.mark.slow
def test_killed_writer_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    # ~2 MB of varied content, CRLF mixed in, no trailing newline.
    chunk = b"".join(b"10.%d.%d.%d\thost-%05d.lan  # filler\r\n" % (i % 250, i % 200, i % 100, i) for i in range(2000))
    original = chunk * 27 + b"# tail without newline \xe9"
    assert len(original) > 2_000_000 and not _has_marker_line(original)
    path.write_bytes(original)
    jitter = random.Random(1234)
    for round_ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOPING_WRITER, str(path), str(round_)], stdout=subprocess.PIPE, env=_env()
        )
        try:
            _wait_for_lines(proc, 1 + round_ % 4, time.monotonic() + 30)
            # Jitter (not synchronisation): land the kill at varied points of the next write.
            time.sleep(jitter.uniform(0, 0.01))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()
        data = path.read_bytes()
        if data != original:
            before, block, after = _block_of(data)
            assert before == original + b"\r\n" and after == b""
            assert block.endswith(END + b"\r\n")
        names = HostsFile(path).entries()
        assert all(n.startswith("k") for n in names)  # parses; at most one name per killed round
        if round_ % 2:
            HostsFile(path).clean()
            assert path.read_bytes() == original
            assert _tmp_files(tmp_path) == []
    HostsFile(path).clean()
    assert path.read_bytes() == original


# --- permissions -------------------------------------------------------------------------------


def _run_unprivileged(fn: Callable[[], Any]) -> Any:
    """Run `fn` as `nobody` in a forked child when we are root (chmod does not stop root), else directly.

    Forking (rather than exec'ing a new interpreter) keeps working when the interpreter itself is not
    readable by `nobody`. Returns fn's result or the exception it raised, pickled back through a pipe.
    """
    if os.geteuid() != 0:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test to inspect
            return exc
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to drop privileges to")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                result: Any = fn()
            except Exception as exc:  # noqa: BLE001
                result = exc
            payload = pickle.dumps(result)
            with os.fdopen(write_fd, "wb") as fh:
                fh.write(payload)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        payload = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and payload, "unprivileged child failed"
    return pickle.loads(payload)


@pytest.fixture
def shared_dir() -> Any:
    """A directory `nobody` can reach (pytest's tmp_path lives under a 0700 root directory)."""
    d = Path(tempfile.mkdtemp(prefix="gotunnel-hosts-"))
    try:
        yield d
    finally:
        os.chmod(d, 0o755)
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def _assert_refused(result: Any, path: Path, hint: str = "sudo gotunnel hosts sync") -> None:
    assert isinstance(result, PermissionProblem), repr(result)
    assert str(path) in result.message
    assert result.hint == hint


def test_read_only_file_refused(shared_dir: Path) -> None:
    path = shared_dir / "hosts"
    path.write_bytes(UNUSUAL)
    os.chmod(path, 0o444)
    os.chmod(shared_dir, 0o777)  # the directory is writable: only the file's mode stops us
    hf = HostsFile(path)
    _assert_refused(_run_unprivileged(lambda: hf.add(["a.local"])), path)
    assert path.read_bytes() == UNUSUAL
    assert _tmp_files(shared_dir) == []
    # Reading needs no write access, even when the lock file cannot be created.
    assert _run_unprivileged(hf.entries) == []


def test_read_only_directory_refused(shared_dir: Path) -> None:
    path = shared_dir / "hosts"
    path.write_bytes(UNUSUAL)
    os.chmod(path, 0o666)  # the file is writable, but it cannot be replaced
    os.chmod(shared_dir, 0o555)
    hf = HostsFile(path, fix_command="sudo gotunnel up")
    _assert_refused(_run_unprivileged(lambda: hf.sync(["a.local"])), path, hint="sudo gotunnel up")
    assert path.read_bytes() == UNUSUAL


def test_write_errors_refused_even_when_access_check_passes(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.access can be wrong (ACLs, read-only mounts, root-squash): EACCES from the write itself is handled."""
    path = shared_dir / "hosts"
    path.write_bytes(UNUSUAL)
    os.chmod(path, 0o666)
    lock = Path(str(path) + hosts_mod.LOCK_SUFFIX)
    lock.write_bytes(b"")
    os.chmod(lock, 0o666)
    os.chmod(shared_dir, 0o555)
    hf = HostsFile(path)

    # Patched before forking, so the unprivileged child inherits it; monkeypatch undoes it here.
    monkeypatch.setattr(hosts_mod.os, "access", lambda *a, **k: True)
    _assert_refused(_run_unprivileged(lambda: hf.add(["a.local"])), path)
    assert path.read_bytes() == UNUSUAL
    assert _tmp_files(shared_dir) == []
