"""What `gotunnel run` derives before it starts anything: the tunnel name (package.json,
pyproject.toml, directory, a linked git worktree's branch, with real `git worktree add`) and the
port flags it gives each framework (directly and through npm/pnpm/yarn scripts)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gotunnel_core.devloop.frameworks import prepare
from gotunnel_core.devloop.project import project_name, sanitize_label


@pytest.mark.parametrize("raw, label", [
    ("@acme/Shop_Front", "acme-shop-front"), ("My App!", "my-app"), ("--x--", "x"), ("Ünïcode Café", "unicode-cafe"),
    ("a" * 80, "a" * 63), ("feature/login", "feature-login"), ("___", ""),
])
def test_sanitize_label(raw: str, label: str) -> None:
    assert sanitize_label(raw) == label


def test_name_from_package_json_drops_the_scope(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"name": "@acme/Shop_Front"}))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    picked = project_name(tmp_path)
    assert (picked.name, picked.source) == ("shop-front", "package.json")


@pytest.mark.parametrize("toml", ['[project]\nname = "Data_Tool"\n', '[tool.poetry]\nname = "data.tool"\n'])
def test_name_from_pyproject(tmp_path: Path, toml: str) -> None:
    (tmp_path / "pyproject.toml").write_text(toml)
    assert project_name(tmp_path).name == "data-tool"


def test_name_falls_back_to_the_directory_and_ignores_broken_manifests(tmp_path: Path) -> None:
    project = tmp_path / "My Project"
    project.mkdir()
    (project / "package.json").write_text("{not json")
    (project / "pyproject.toml").write_text("not = [toml")
    picked = project_name(project)
    assert picked.name == "my-project" and "directory" in picked.source


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_linked_worktree_gets_the_branch_in_front(tmp_path: Path) -> None:
    main = tmp_path / "webshop"
    (main / "web").mkdir(parents=True)
    (main / "web" / "package.json").write_text(json.dumps({"name": "storefront"}))
    _git("init", "-q", "-b", "main", cwd=main)
    _git("add", ".", cwd=main)
    _git("commit", "-q", "-m", "init", cwd=main)
    _git("worktree", "add", "-q", "-b", "feature/Login_Form", str(tmp_path / "wt-login"), cwd=main)
    # The main checkout: no prefix; a subdirectory's own package.json names it.
    assert project_name(main / "web").name == "storefront"
    assert project_name(main).name == "webshop"
    linked = project_name(tmp_path / "wt-login" / "web")
    assert linked.name == "feature-login-form.storefront" and "linked git worktree" in linked.source
    # No manifest at the worktree's top: the main checkout's directory name, not the worktree's.
    assert project_name(tmp_path / "wt-login").name == "feature-login-form.webshop"
    _git("checkout", "-q", "--detach", cwd=tmp_path / "wt-login")
    assert project_name(tmp_path / "wt-login").name.endswith(".webshop")


def _scripts(tmp_path: Path, **scripts: str) -> Path:
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "scripts": scripts}))
    return tmp_path


@pytest.mark.parametrize("argv, script, expected, framework", [
    (["vite"], None, ["vite", "--port", "5000", "--strictPort"], "Vite"),
    (["npx", "vite", "dev"], None, ["npx", "vite", "dev", "--port", "5000", "--strictPort"], "Vite"),
    (["npm", "run", "dev"], "vite", ["npm", "run", "dev", "--", "--port", "5000", "--strictPort"], "Vite"),
    (["npm", "run", "dev", "--", "--open"], "vite", ["npm", "run", "dev", "--", "--open", "--port", "5000", "--strictPort"], "Vite"),
    (["pnpm", "dev"], "NODE_ENV=development vite", ["pnpm", "dev", "--port", "5000", "--strictPort"], "Vite"),
    (["yarn", "dev"], "tsc -b && astro dev", ["yarn", "dev", "--port", "5000"], "Astro"),
    (["bun", "run", "dev"], "next dev --turbo", ["bun", "run", "dev", "-p", "5000"], "Next.js"),
    (["npm", "start"], "next start", ["npm", "start", "--", "-p", "5000"], "Next.js"),
    (["python", "manage.py", "runserver"], None, ["python", "manage.py", "runserver", "127.0.0.1:5000"], "Django"),
    (["uv", "run", "uvicorn", "app:app", "--reload"], None, ["uv", "run", "uvicorn", "app:app", "--reload", "--port", "5000"], "uvicorn"),
    (["python3", "-m", "flask", "run"], None, ["python3", "-m", "flask", "run", "--port", "5000"], "Flask"),
    (["gunicorn", "app:app"], None, ["gunicorn", "app:app", "--bind", "127.0.0.1:5000"], "gunicorn"),
    (["bundle", "exec", "bin/rails", "s"], None, ["bundle", "exec", "bin/rails", "s", "-p", "5000"], "Rails"),
    (["python3", "app.py"], None, ["python3", "app.py"], None),
    (["npm", "run", "dev"], "node server.js", ["npm", "run", "dev"], None),
])
def test_framework_port_flags(tmp_path: Path, argv: list[str], script: str | None, expected: list[str],
                              framework: str | None) -> None:
    cwd = _scripts(tmp_path, dev=script, start=script) if script else tmp_path
    prepared = prepare(argv, 5000, cwd)
    assert prepared.argv == expected and prepared.framework == framework
    assert prepared.env == {"PORT": "5000", "HOST": "127.0.0.1"} and prepared.port == 5000


@pytest.mark.parametrize("argv, script, port", [
    (["vite", "--port", "3000"], None, 3000),
    (["npm", "run", "dev", "--", "--port=4000"], "vite", 4000),
    (["pnpm", "dev"], "next dev -p 3001", 3001),
    (["python", "manage.py", "runserver", "0.0.0.0:8001"], None, 8001),
    (["gunicorn", "-b", "127.0.0.1:9000", "app:app"], None, 9000),
    (["rails", "server", "-p3002"], None, 3002),
])
def test_a_port_the_command_sets_itself_is_kept_and_awaited(tmp_path: Path, argv: list[str], script: str | None,
                                                           port: int) -> None:
    cwd = _scripts(tmp_path, dev=script) if script else tmp_path
    prepared = prepare(argv, 5000, cwd)
    assert prepared.argv == argv and prepared.port == port and prepared.env["PORT"] == str(port)
