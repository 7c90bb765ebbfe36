"""`gotunnel trust` against real tools in temporary locations: the Debian system store through the
real update-ca-certificates, NSS databases through the real certutil/tstclnt, the --env bundle
through Python and curl; macOS, Windows and Java through fake tools (their real ones are not on
this platform)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel
from trust_helpers import (
    CERTUTIL,
    UPDATE_CA,
    chown_tree,
    fake_tool,
    handshake_ok,
    log_lines,
    new_nss_db,
    nss_has,
    nss_nicknames,
    nss_valid_ssl_ca,
    system_dirs,
)

REPO = Path(__file__).resolve().parent.parent

needs_update_ca = pytest.mark.skipif(UPDATE_CA is None, reason="update-ca-certificates (ca-certificates) not installed")
needs_certutil = pytest.mark.skipif(CERTUTIL is None, reason="certutil (libnss3-tools) not installed")


@pytest.fixture
def home(gotunnel: Gotunnel, tmp_path: Path) -> Path:
    """A private HOME for the CLI (NSS and Firefox discovery are HOME-relative), with no browser on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    gotunnel.env["HOME"] = str(home)
    return home


@pytest.fixture
def sysdirs(gotunnel: Gotunnel, tmp_path: Path) -> dict[str, str]:
    env = system_dirs(tmp_path / "sys")
    gotunnel.env.update(env)
    return env


def record(gotunnel: Gotunnel) -> dict[str, Any]:
    path = gotunnel.state_dir / "trust.json"
    return json.loads(path.read_text())["stores"] if path.exists() else {}


def rows(result: Any) -> dict[str, dict[str, Any]]:
    return {r["store"]: r for r in json.loads(result.out)["stores"]}


# -- system store (Debian) ---------------------------------------------------------------------


@needs_update_ca
def test_system_store_install_handshake_uninstall(gotunnel: Gotunnel, echo_backend: Any, home: Path,
                                                  sysdirs: dict[str, str]) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "sysapp", "-p", str(backend.port), check=True)
    certs_dir = sysdirs["GOTUNNEL_TRUST_SYSTEM_BUNDLE_DIR"]
    assert not handshake_ok(gotunnel.https_port, "sysapp.localhost", capath=certs_dir)
    checked = rows(gotunnel("trust", "--check", "--store", "system", "--json"))
    assert checked["system-debian"]["status"] == "not trusted"

    result = gotunnel("trust", "--store", "system", "--json")
    assert result.code == 0, result.err
    got = rows(result)
    assert got["system-debian"]["status"] == "installed"
    assert got["system-fedora"]["status"] == "missing" and got["system-arch"]["status"] == "missing"
    anchors = list(Path(sysdirs["GOTUNNEL_TRUST_SYSTEM_DIR"]).iterdir())
    assert len(anchors) == 1 and anchors[0].name.startswith("gotunnel-") and anchors[0].suffix == ".crt"
    ca_pem = Path(gotunnel("cert", "ca", "--path", check=True).out.strip()).read_bytes()
    assert anchors[0].read_bytes() == ca_pem
    assert ca_pem.decode().strip() in (Path(certs_dir) / "ca-certificates.crt").read_text()

    # A Python/OpenSSL handshake trusting only that directory now succeeds, for the tunnel's names.
    assert handshake_ok(gotunnel.https_port, "sysapp.localhost", capath=certs_dir)
    assert handshake_ok(gotunnel.https_port, "sysapp.local", capath=certs_dir)
    assert handshake_ok(gotunnel.https_port, "sysapp.localhost", cafile=f"{certs_dir}/ca-certificates.crt")
    checked = rows(gotunnel("trust", "--check", "--store", "system", "--json"))
    assert checked["system-debian"]["status"] == "trusted"
    assert "TLS handshake" in checked["system-debian"]["detail"]
    entry = record(gotunnel)["system-debian"]
    assert entry["file"] == str(anchors[0])
    by_url = gotunnel.json("trust", "--check", "--store", "system-debian", "--check-url",
                           f"https://sysapp.localhost:{gotunnel.https_port}/")
    assert by_url["stores"][0]["status"] == "trusted"
    assert by_url["target"] == f"sysapp.localhost@127.0.0.1:{gotunnel.https_port}"

    result = gotunnel("trust", "--uninstall", "--json")
    assert result.code == 0, result.err
    assert rows(result)["system-debian"]["status"] == "removed"
    assert not handshake_ok(gotunnel.https_port, "sysapp.localhost", capath=certs_dir)
    assert list(Path(sysdirs["GOTUNNEL_TRUST_SYSTEM_DIR"]).iterdir()) == []
    leftovers = [p.name for p in Path(certs_dir).iterdir() if "gotunnel" in p.name or
                 (p.is_symlink() and "gotunnel" in os.readlink(p))]
    assert leftovers == []
    assert ca_pem.decode().strip() not in (Path(certs_dir) / "ca-certificates.crt").read_text()
    assert "system-debian" not in record(gotunnel)
    again = gotunnel("trust", "--check", "--store", "system-debian")
    assert again.code == 1 and "not trusted" in again.out


@needs_update_ca
def test_system_store_offline_check_without_daemon(gotunnel: Gotunnel, home: Path, sysdirs: dict[str, str]) -> None:
    gotunnel("trust", "--store", "system-debian", check=True)
    checked = rows(gotunnel("trust", "--check", "--store", "system-debian", "--json"))
    assert checked["system-debian"]["status"] == "trusted"
    assert "openssl verify" in checked["system-debian"]["detail"]


def test_failed_system_install_is_rolled_back(gotunnel: Gotunnel, home: Path, sysdirs: dict[str, str],
                                              tmp_path: Path) -> None:
    """update-ca-certificates failing half-way: our .crt is taken out again, nothing is recorded."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    fake_tool(bin_dir / "update-ca-certificates", log, 'case "$*" in *--fresh*) exit 0;; esac\nexit 3')
    gotunnel.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    result = gotunnel("trust", "--store", "system-debian")
    assert result.code == 1
    assert "system-debian" in result.err and "nothing half-done" in result.err
    assert "failed" in result.out and "rolled back" in result.out
    assert list(Path(sysdirs["GOTUNNEL_TRUST_SYSTEM_DIR"]).iterdir()) == []
    assert "system-debian" not in record(gotunnel)
    calls = log_lines(log)
    assert len(calls) == 2 and "--fresh" in calls[1]


# -- NSS ---------------------------------------------------------------------------------------


@needs_certutil
def test_nss_chrome_and_every_firefox_profile(gotunnel: Gotunnel, echo_backend: Any, home: Path) -> None:
    chrome = new_nss_db(home / ".pki" / "nssdb")
    profiles = [
        new_nss_db(home / ".mozilla/firefox/abcd.default-release"),
        new_nss_db(home / "snap/firefox/common/.mozilla/firefox/snap1.default"),
        new_nss_db(home / ".var/app/org.mozilla.firefox/.mozilla/firefox/flat.default"),
    ]
    (home / ".mozilla/firefox/not-a-profile").mkdir()
    backend = echo_backend()
    gotunnel("start", "-d", "nssapp", "-p", str(backend.port), check=True)
    before = rows(gotunnel("trust", "--check", "--store", "nss", "--json"))["nss"]
    assert before["status"] == "not trusted" and "SEC_ERROR_UNKNOWN_ISSUER" in before["detail"]

    result = gotunnel("trust", "--store", "nss", "--json")
    assert result.code == 0, result.err
    assert rows(result)["nss"]["status"] == "installed"
    nick = record(gotunnel)["nss"]["nickname"]
    for db in (chrome, *profiles):
        assert nss_valid_ssl_ca(db, nick), db
    assert len(record(gotunnel)["nss"]["databases"]) == 4
    # The served leaf verifies through NSS: a real handshake with tstclnt against each database.
    after = rows(gotunnel("trust", "--check", "--store", "nss", "--json"))["nss"]
    assert after["status"] == "trusted" and after["detail"].count("tstclnt handshake verified") == 4

    other = "someone else's CA"
    from gotunnel_core.certs import CertificateAuthority

    foreign = CertificateAuthority(home.parent / "foreign-ca")
    foreign.ensure()
    subprocess.run(["certutil", "-A", "-d", f"sql:{chrome}", "-n", other, "-t", "C,,", "-i", str(foreign.cert_path)],
                   check=True)
    result = gotunnel("trust", "--uninstall", "--store", "nss")
    assert result.code == 0, result.err
    for db in (chrome, *profiles):
        assert not nss_has(db, nick), db
        assert (db / "cert9.db").exists()
    assert nss_nicknames(chrome) == [other]  # only what gotunnel installed was removed
    assert record(gotunnel) == {}
    assert "not installed" in gotunnel("trust", "--uninstall", "--store", "nss").out.replace("-", " ")


@needs_certutil
def test_nss_install_rolls_back_when_one_database_fails(gotunnel: Gotunnel, home: Path) -> None:
    good = new_nss_db(home / ".pki" / "nssdb")
    broken = home / ".mozilla/firefox/zzz.broken"
    broken.mkdir(parents=True)
    (broken / "cert9.db").write_bytes(b"this is not sqlite")
    result = gotunnel("trust", "--store", "nss")
    assert result.code == 1 and "rolled back" in result.out
    assert [n for n in nss_nicknames(good) if n.startswith("gotunnel")] == []
    assert "nss" not in record(gotunnel)


@needs_certutil
def test_chrome_db_created_when_a_browser_is_installed(gotunnel: Gotunnel, home: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir / "chromium", tmp_path / "chromium.log")
    gotunnel.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    assert rows(gotunnel("trust", "--check", "--store", "nss", "--json"))["nss"]["status"] == "store missing"
    result = gotunnel("trust", "--store", "nss")
    assert result.code == 0, result.err
    db = home / ".pki" / "nssdb"
    assert nss_valid_ssl_ca(db, record(gotunnel)["nss"]["nickname"])
    assert record(gotunnel)["nss"]["created"] == [str(home / ".pki")]
    assert (home / ".pki").stat().st_mode & 0o777 == 0o700


@needs_update_ca
def test_only_the_first_present_system_store_is_used(gotunnel: Gotunnel, home: Path, sysdirs: dict[str, str],
                                                      tmp_path: Path) -> None:
    """With update-ca-certificates, update-ca-trust and p11-kit's trust all installed, only the first
    manages the system store: the CA is never installed twice."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    fake_tool(bin_dir / "update-ca-trust", log)
    fake_tool(bin_dir / "trust", log)
    gotunnel.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    result = gotunnel("trust", "--store", "system", "--json")
    assert result.code == 0, result.err
    got = rows(result)
    assert got["system-debian"]["status"] == "installed"
    for other in ("system-fedora", "system-arch"):
        assert got[other]["status"] == "missing"
        assert got[other]["detail"] == "the system store is managed through system-debian"
    assert log_lines(log) == []


def test_no_store_at_all(gotunnel: Gotunnel, home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    gotunnel.env["PATH"] = str(empty)
    gotunnel.env["GOTUNNEL_TRUST_SYSTEM_BUNDLE_DIR"] = str(tmp_path / "nope")
    result = gotunnel("trust")
    assert result.code == 1 and "no trust store found" in result.err
    assert "missing" in result.out


# -- privileges --------------------------------------------------------------------------------


def _python_for(uid: int) -> tuple[str, str] | None:
    """An interpreter `uid` may run that imports gotunnel (ours may live under root's 0700 home;
    then the system's same-version Python with our site-packages), and its PYTHONPATH."""
    import site

    path = os.pathsep.join([str(REPO), str(REPO / "plugins" / "builtin_proxy"),
                            *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        for extra in ("", *site.getsitepackages()):
            pythonpath = os.pathsep.join(p for p in (path, extra) if p)
            try:
                probe = subprocess.run([exe, "-c", "import gotunnel_core.cli, cryptography"], capture_output=True,
                                       env={"PYTHONPATH": pythonpath}, user=uid, group=uid, extra_groups=[],
                                       cwd="/", timeout=60)
            except OSError:
                break
            if probe.returncode == 0:
                return exe, pythonpath
    return None


def _run_as(uid: int, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    found = _python_for(uid)
    if found is None:
        pytest.skip(f"no Python that uid {uid} may run with gotunnel importable")
    exe, pythonpath = found
    return subprocess.run([exe, "-m", "gotunnel_core", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": pythonpath, **env}, user=uid, group=uid,
                          extra_groups=[], cwd="/")


@pytest.mark.root
@needs_certutil
@needs_update_ca
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as an unprivileged user")
def test_unprivileged_user_gets_user_stores_and_the_sudo_command(tmp_path: Path) -> None:
    """As `nobody`: NSS is done, the root-owned system store is not touched at all, and the
    command says exactly what to run with sudo."""
    root = Path(tempfile.mkdtemp(prefix="gt-nobody-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        home = root / "home"
        new_nss_db(home / ".pki" / "nssdb")
        chown_tree(home, 65534, 65534)
        sysenv = system_dirs(root / "sys")  # root-owned, 0755: not writable for nobody
        state = home / "state"
        env = {"HOME": str(home), "GOTUNNEL_STATE_DIR": str(state), **sysenv}
        result = _run_as(65534, ["trust"], env)
        assert result.returncode == 1, result
        lines = {line.split()[0]: line for line in result.stdout.splitlines()}
        assert "installed" in lines["nss"]
        assert "needs-sudo" in lines["system-debian"]
        assert "error: system-debian needs root; done: nss" in result.stderr
        hint = [line for line in result.stderr.splitlines() if line.startswith("hint: ")][0]
        assert hint.startswith("hint: sudo ") and f"--state-dir {state} trust --store system-debian" in hint
        assert list(Path(sysenv["GOTUNNEL_TRUST_SYSTEM_DIR"]).iterdir()) == []
        stores = json.loads((state / "trust.json").read_text())["stores"]
        assert sorted(stores) == ["nss"]
        assert all(p.stat().st_uid == 65534 for p in state.rglob("*"))

        # Uninstall as the user: NSS removed, nothing to do for the system store.
        result = _run_as(65534, ["trust", "--uninstall"], env)
        assert result.returncode == 0, result.stderr
        assert json.loads((state / "trust.json").read_text())["stores"] == {}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- --env ---------------------------------------------------------------------------------------


def test_env_bundle_for_python_and_curl(gotunnel: Gotunnel, echo_backend: Any, home: Path) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "envapp", "-p", str(backend.port), check=True)
    info = gotunnel.json("trust", "--env")
    bundle = Path(info["bundle"])
    assert set(info["variables"]) == {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"}
    assert all(v == str(bundle) for v in info["variables"].values())
    text = bundle.read_text()
    ca = Path(gotunnel("cert", "ca", "--path", check=True).out.strip()).read_text()
    assert ca.strip() in text
    if info["system_roots"]:
        assert text.count("BEGIN CERTIFICATE") > 10  # the system roots are there too
    exports = gotunnel("trust", "--env", check=True).out
    assert f"export SSL_CERT_FILE={bundle}" in exports and f"export NODE_EXTRA_CA_CERTS={bundle}" in exports

    url = f"https://envapp.localhost:{gotunnel.https_port}/via-env"
    probe = ("import json, socket, ssl, urllib.request\n"
             "orig = socket.getaddrinfo\n"
             "socket.getaddrinfo = lambda h, *a, **k: orig('127.0.0.1' if h.endswith('localhost') else h, *a, **k)\n"
             f"print(json.load(urllib.request.urlopen({url!r}, timeout=10))['path'])\n")
    env = {**os.environ, **info["variables"]}
    ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "/via-env", ok.stderr
    bare = {k: v for k, v in os.environ.items() if k not in info["variables"]}
    bare["SSL_CERT_FILE"] = "/dev/null"
    fails = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=bare, timeout=30)
    assert fails.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in fails.stderr
    if shutil.which("curl"):
        curl = subprocess.run(["curl", "-sS", "--resolve", f"envapp.localhost:{gotunnel.https_port}:127.0.0.1", url],
                              capture_output=True, text=True, env=env, timeout=30)
        assert curl.returncode == 0 and json.loads(curl.stdout)["path"] == "/via-env", curl.stderr

    assert record(gotunnel)["env"]["bundle"] == str(bundle)
    gotunnel("trust", "--uninstall", check=True)
    assert not bundle.exists() and record(gotunnel) == {}


# -- stores this platform cannot run, through fake tools ------------------------------------------


def test_macos_windows_java_commands(gotunnel: Gotunnel, home: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir / "security", log)
    keychain = tmp_path / "System.keychain"
    keychain.write_text("")
    certutil_exe = fake_tool(tmp_path / "win" / "certutil.exe", log)
    java_home = tmp_path / "jdk"
    fake_tool(java_home / "bin" / "keytool", log, 'case "$*" in -list*) exit 1;; esac')
    (java_home / "lib/security").mkdir(parents=True)
    (java_home / "lib/security/cacerts").write_bytes(b"")
    gotunnel.env.update({
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GOTUNNEL_TRUST_MACOS_KEYCHAIN": str(keychain),
        "GOTUNNEL_TRUST_WINDOWS_CERTUTIL": str(certutil_exe),
        "JAVA_HOME": str(java_home),
    })
    result = gotunnel("trust", "--store", "macos", "--store", "windows", "--store", "java", "--json")
    assert result.code == 0, result.err
    assert {k: v["status"] for k, v in rows(result).items()} == {"macos": "installed", "windows": "installed",
                                                                  "java": "installed"}
    ca = gotunnel.json("cert", "ca")
    ca_path = ca["cert_path"]
    calls = log_lines(log)
    assert f"security add-trusted-cert -d -r trustRoot -k {keychain} {ca_path}" in calls
    assert any(c.startswith("certutil.exe -addstore -user -f Root ") and c.endswith("ca.pem") for c in calls)
    keytool = [c for c in calls if c.startswith("keytool -importcert")]
    assert keytool and "-alias gotunnel-" in keytool[0] and f"-keystore {java_home}/lib/security/cacerts" in keytool[0]
    stored = record(gotunnel)
    sha1 = stored["windows"]["sha1"]
    assert stored["macos"]["sha1"] == sha1 and len(sha1) == 40
    log.unlink()
    (java_home / "bin" / "keytool").write_text((java_home / "bin" / "keytool").read_text().replace("exit 1", "exit 0"))
    assert gotunnel("trust", "--uninstall", check=True).code == 0
    calls = log_lines(log)
    assert f"security delete-certificate -Z {sha1} {keychain}" in calls
    assert f"certutil.exe -delstore -user Root {sha1}" in calls
    assert any(c.startswith(f"keytool -delete -alias {stored['java']['alias']}") for c in calls)
    assert record(gotunnel) == {}


def test_java_only_when_java_home_is_set(gotunnel: Gotunnel, home: Path) -> None:
    gotunnel.env["JAVA_HOME"] = ""
    checked = rows(gotunnel("trust", "--check", "--store", "java", "--json"))
    assert checked["java"] == {**checked["java"], "status": "store missing", "detail": "JAVA_HOME is not set"}


# -- CLI contract --------------------------------------------------------------------------------


def test_trust_usage_errors(gotunnel: Gotunnel, home: Path) -> None:
    bad = gotunnel("trust", "--store", "keychain")
    assert bad.code == 2 and "unknown trust store 'keychain'" in bad.err and "system-debian" in bad.err
    both = gotunnel("trust", "--check", "--uninstall")
    assert both.code == 2 and "only one of" in both.err
    url = gotunnel("trust", "--check-url", "https://x.localhost/")
    assert url.code == 2 and "--check-url needs --check" in url.err
    nothing = gotunnel("trust", "--uninstall")
    assert nothing.code == 0 and "nothing recorded" in nothing.out
