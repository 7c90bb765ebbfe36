"""The tunnel name `gotunnel run` picks when none is given: the project's own name.

The name comes from `package.json` (`name`, a scope dropped) or `pyproject.toml` (`[project]` or
`[tool.poetry]` name), found in the working directory or a parent up to the repository's top, else
from the directory's name. In a linked git worktree (`git worktree add`) the branch is put in front,
`BRANCH.NAME`, so two checkouts of one project get two names. Git's files are read directly (no
`git` program needed): a linked worktree has a `.git` file pointing at a gitdir with a `commondir`.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..models import parse_tunnel_name

_INVALID = re.compile(r"[^a-z0-9]+")


def sanitize_label(raw: str) -> str:
    """One DNS label from free text: accents dropped (`é` -> `e`), lower-case, runs of other
    characters -> '-', at most 63 characters."""
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    label = _INVALID.sub("-", ascii_text.lower()).strip("-")
    return label[:63].rstrip("-")


@dataclass(frozen=True)
class Worktree:
    """A linked git worktree: its branch (or short commit when detached) and the main checkout."""

    branch: str
    main_dir: Path


@dataclass(frozen=True)
class ProjectName:
    """The chosen tunnel name and, for the user, where its parts came from."""

    name: str
    source: str


def _manifest_name(directory: Path) -> tuple[str, str] | None:
    """(name, file) from the directory's package.json or pyproject.toml, if either names the project."""
    package = directory / "package.json"
    if package.is_file():
        try:
            name = json.loads(package.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, str) and sanitize_label(name.rpartition("/")[2]):
            return sanitize_label(name.rpartition("/")[2]), "package.json"
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        for name in (data.get("project", {}).get("name"), data.get("tool", {}).get("poetry", {}).get("name")):
            if isinstance(name, str) and sanitize_label(name):
                return sanitize_label(name), "pyproject.toml"
    return None


def find_git(start: Path) -> Path | None:
    """The `.git` (directory or file) of the checkout holding `start`, if any."""
    for directory in (start, *start.parents):
        candidate = directory / ".git"
        if candidate.exists():
            return candidate
    return None


def linked_worktree(dot_git: Path | None) -> Worktree | None:
    """The worktree described by a `.git` file, when it is a linked worktree (not a submodule)."""
    if dot_git is None or not dot_git.is_file():
        return None
    try:
        first = dot_git.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith("gitdir:"):
        return None
    gitdir = (dot_git.parent / first.partition(":")[2].strip()).resolve()
    try:
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None  # a submodule's gitdir has no commondir
    branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else head[:7]
    main_dir = common.parent if common.name == ".git" else common.with_name(common.name.removesuffix(".git"))
    return Worktree(branch, main_dir)


def project_name(cwd: Path) -> ProjectName:
    """The default tunnel name for a project in `cwd` (see the module docstring)."""
    dot_git = find_git(cwd)
    top = dot_git.parent if dot_git is not None else cwd
    found: tuple[str, str] | None = None
    for directory in (cwd, *cwd.parents):
        found = _manifest_name(directory)
        if found is not None or directory == top:
            break
    worktree = linked_worktree(dot_git)
    if found is None:
        directory = worktree.main_dir if worktree is not None else top
        found = (sanitize_label(directory.name) or "app", f"directory {directory.name!r}")
    name, source = found
    if worktree is not None and sanitize_label(worktree.branch):
        branch = sanitize_label(worktree.branch)
        name, source = f"{branch}.{name}", f"{source}, branch {worktree.branch!r} of a linked git worktree"
    return ProjectName(parse_tunnel_name(name), source)
