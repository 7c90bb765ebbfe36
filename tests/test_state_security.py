"""The state directory's permissions through the CLI, and `sudo`: the invoking user's state, not root's."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel
from trust_helpers import CERTUTIL, UPDATE_CA, new_nss_db, nss_valid_ssl_ca, system_dirs


def test_state_dir_open_to_others_is_refused(gotunnel: Gotunnel) -> None:
    gotunnel("cert", "ca", "--path", check=True)  # creates the state dir (0700)
    os.chmod(gotunnel.state_dir, 0o755)
    result = gotunnel("list")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[0] == f"error: directory {str(gotunnel.state_dir)!r} is accessible by other users (mode 0755)"
    assert lines[1] == f"hint: restrict it: chmod 700 {gotunnel.state_dir}"
    assert "Traceback" not in result.err


def test_ca_dir_and_key_modes_and_a_readable_key_is_refused(gotunnel: Gotunnel) -> None:
    ca = Path(gotunnel("cert", "ca", "--path", check=True).out.strip())
    assert stat.S_IMODE(ca.parent.stat().st_mode) == 0o700
    key = ca.parent / "ca-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    os.chmod(key, 0o644)
    result = gotunnel("cert", "ca")
    assert result.code == 1
    assert f"key file {str(key)!r} is accessible by other users (mode 0644)" in result.err
    assert f"hint: restrict it: chmod 600 {key}" in result.err


# -- sudo --------------------------------------------------------------------------------------

FAKE_UID = 4242


@pytest.fixture
def sudo_user(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Pretend root was reached through `sudo` by a user `alice` (uid 4242) whose home is a temp dir."""
    home = Path(tempfile.mkdtemp(prefix="gt-alice-", dir="/tmp"))
    os.chmod(home, 0o755)
    real_getpwnam = pwd.getpwnam

    def getpwnam(name: str) -> Any:
        if name == "alice":
            return pwd.struct_passwd(("alice", "x", FAKE_UID, FAKE_UID, "", str(home), "/bin/sh"))
        return real_getpwnam(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("HOME", "/root")
    for var in ("GOTUNNEL_STATE_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_default_state_dir_is_the_sudo_users(sudo_user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gotunnel_core import paths

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("XDG_STATE_HOME", "/root/.local/state")  # root's, as sudo may keep it
    assert paths.default_state_dir() == sudo_user / ".local/state/gotunnel"
    assert paths.invoking_home() == sudo_user
    assert paths.invoking_ids() == (FAKE_UID, FAKE_UID)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: SUDO_USER means nothing
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.delenv("XDG_STATE_HOME")
    assert paths.default_state_dir() == Path("/root/.local/state/gotunnel")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(CERTUTIL is None or UPDATE_CA is None, reason="certutil or update-ca-certificates missing")
def test_sudo_trust_keeps_the_users_files_the_users(sudo_user: Path, tmp_path: Path, capsys: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo gotunnel trust`: the user's state (CA, record) and NSS database are created and changed
    as the user, only the system store as root."""
    # Everything the CLI imports lazily is imported now, while we can read all of it.
    import cryptography.x509  # noqa: F401
    import gotunnel_core.certservice  # noqa: F401
    import gotunnel_core.trust  # noqa: F401
    import gotunnel_core.trust.env_bundle  # noqa: F401
    from gotunnel_core.cli import main

    (sudo_user / ".pki" / "nssdb").mkdir(parents=True)
    for p in (sudo_user, sudo_user / ".pki", sudo_user / ".pki" / "nssdb"):
        os.chown(p, FAKE_UID, FAKE_UID)
    db = new_nss_db(sudo_user / ".pki" / "nssdb", owner=FAKE_UID)
    for key, value in system_dirs(tmp_path / "sys").items():
        monkeypatch.setenv(key, value)

    with pytest.raises(SystemExit) as exit_info:
        main(["--log-level", "warning", "trust", "--store", "nss", "--store", "system-debian", "--json"])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    assert os.geteuid() == 0 and os.getegid() == 0  # back to root afterwards
    stores = {r["store"]: r["status"] for r in json.loads(out.out)["stores"]}
    assert stores == {"nss": "installed", "system-debian": "installed"}

    state = sudo_user / ".local/state/gotunnel"
    assert (state / "trust.json").is_file() and (state / "ca" / "ca.pem").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["trust", "--check", "--store", "nss", "--store", "system-debian", "--json"])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    assert {r["store"]: r["status"] for r in json.loads(out.out)["stores"]} == {"nss": "trusted",
                                                                                "system-debian": "trusted"}
    foreign = [str(p) for p in [state, *state.rglob("*")] if p.stat().st_uid != FAKE_UID]
    assert foreign == []
    assert [str(p) for p in db.iterdir() if p.stat().st_uid != FAKE_UID] == []
    record = json.loads((state / "trust.json").read_text())["stores"]
    assert nss_valid_ssl_ca(db, record["nss"]["nickname"])
    assert Path(record["system-debian"]["file"]).stat().st_uid == 0
