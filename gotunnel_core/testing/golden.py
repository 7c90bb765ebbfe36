"""Golden files for `gotunnel render`: the exact config an engine renders for a config file that
uses every tunnel option (`CONFIG`), compared file by file, with a diff on a difference. After an
intended change, regenerate with GOTUNNEL_UPDATE_GOLDEN=1 and review the diff in git. An engine's
tests call `check_render_golden(gotunnel, "myengine", tests_dir / "golden" / "myengine", tmp_path)`.

Machine-specific parts are normalised: the state directory becomes `<STATE>`, its loop marker
`<HOP-ID>`, nginx's `user` line (present only when the daemon runs as root) is dropped, and Envoy's
certificate digests (fresh certificates every run) and the content hashes derived from them become
`<DIGEST>`. A rendered link (`RenderedLink`) is compared as `-> target`.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

import pytest

from .runner import Gotunnel

CONFIG = """
http_port = 8080
https_port = 8443
bind = "127.0.0.1"

[[tunnels]]
name = "web"
backends = ["http://127.0.0.1:3000"]
host_header = "backend"

[[tunnels]]
name = "api"
backends = [
  { url = "http://127.0.0.1:4000", weight = 3 },
  { url = "http://127.0.0.1:4001", weight = 1 },
]
redirect_https = true
health = { path = "/health", interval = 2, timeout = 1, healthy_threshold = 2, unhealthy_threshold = 3 }
headers.request.add = { "X-Env" = "dev \\"quoted\\" $host \\\\ ;{}#" }
headers.request.remove = ["Cookie"]
headers.response.add = { "X-Frame-Options" = "DENY" }
headers.response.remove = ["Server"]

[[tunnels]]
name = "*.preview"
backends = ["http://127.0.0.1:5000/app"]
host_header = "preview.internal:5000"

[[tunnels]]
name = "plain"
backends = ["https://localhost:6443"]
https = false

[[tunnels]]
name = "grpc"
backends = ["h2c://127.0.0.1:50051"]
"""



def _normalise(text: str, state: Path) -> str:
    text = text.replace(str(state), "<STATE>")
    hop = state / "hop-id"  # this state directory's random loop marker
    if hop.exists():
        text = text.replace(hop.read_text().strip(), "<HOP-ID>")
    text = re.sub(r'"(cert|key|version_info)": "[0-9a-f]{16}"', r'"\1": "<DIGEST>"', text)
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("user "))


def _content(path: Path) -> str:
    """A rendered file's text; a rendered link (`RenderedLink`) as `-> target`."""
    return f"-> {os.readlink(path)}\n" if path.is_symlink() else path.read_text()


def check_render_golden(gotunnel: Gotunnel, engine: str, golden_dir: Path, tmp_path: Path, fmt: str | None = None) -> None:
    """Render `CONFIG` with `gotunnel render --engine ENGINE [--format FMT]` and compare it with
    `golden_dir`; then the engine's own validator must accept it (`gotunnel validate`)."""
    for key in ("GOTUNNEL_HTTP_PORT", "GOTUNNEL_HTTPS_PORT", "GOTUNNEL_BIND"):  # the config file's values count
        gotunnel.env.pop(key)
    config = tmp_path / "gotunnel.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    result = gotunnel("--config", str(config), "render", "--engine", engine, "--out", str(out),
                      *(["--format", fmt] if fmt else []))
    assert result.code == 0, result.err
    rendered = {p.relative_to(out).as_posix(): _normalise(_content(p), gotunnel.state_dir)
                for p in sorted(out.rglob("*")) if p.is_file() or p.is_symlink()}
    if os.environ.get("GOTUNNEL_UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden_dir, ignore_errors=True)
        for name, text in rendered.items():
            (golden_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / name).write_text(text)
    expected = {p.relative_to(golden_dir).as_posix(): p.read_text() for p in sorted(golden_dir.rglob("*")) if p.is_file()}
    assert sorted(rendered) == sorted(expected)
    for name in expected:
        if rendered[name] != expected[name]:
            diff = "".join(difflib.unified_diff(expected[name].splitlines(True), rendered[name].splitlines(True),
                                                f"{golden_dir.name}/{name}", "rendered"))
            pytest.fail(f"rendered {name} differs from the golden file "
                        f"(GOTUNNEL_UPDATE_GOLDEN=1 to accept):\n{diff}")
    # The golden config is also a valid one, by the engine's own validator.
    checked = gotunnel("--config", str(config), "validate", "--engine", engine)
    assert checked.code == 0, checked.err
    assert "5 tunnel(s) valid" in checked.out
