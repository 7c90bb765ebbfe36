"""The README's engine matrix, generated from the suite's behaviours and each installed engine's
capability declarations (`Engine.capabilities`, and `Engine.runtime_capabilities` where a runtime
changes one).

    python -m gotunnel_core.testing.matrix              # print it
    python -m gotunnel_core.testing.matrix --write README.md   # rewrite the marked section
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

from ..engine import EngineSpec

MATRIX_BEGIN = "<!-- engine-matrix:begin (generated: python -m gotunnel_core.testing.matrix --write README.md) -->"
MATRIX_END = "<!-- engine-matrix:end -->"
_LABELS = {"unsupported": "no", "variant": "yes*", "pending": "pending"}
#: The engines shipped with gotunnel come first, in this order; other installed engines follow by name.
FIRST = ("builtin", "nginx", "caddy", "envoy")


def installed_engines() -> dict[str, EngineSpec]:
    """Every installed engine, shipped ones first."""
    from ..engine import collect_engines
    from ..plugins import make_plugin_manager

    specs = collect_engines(make_plugin_manager().pm)
    order = [n for n in FIRST if n in specs] + sorted(n for n in specs if n not in FIRST)
    return {name: specs[name] for name in order}


def matrix_markdown(engines: Mapping[str, EngineSpec] | None = None) -> str:
    """The matrix as markdown: one row per behaviour, one column per engine, numbered notes."""
    from .conformance import load_rows

    behaviours = load_rows()
    engines = installed_engines() if engines is None else engines
    names = list(engines)
    lines = ["| behaviour | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    notes: list[str] = []
    for key, row in behaviours.items():
        cells = []
        for name in names:
            engine_class = engines[name].engine_class
            capability = engine_class.capability(key)
            if capability.kind == "supported":
                cell = "yes"
            else:
                notes.append(f"{name}, {row.title.lower()}: {capability.reason}")
                cell = f"{_LABELS[capability.kind]} [{len(notes)}]"
            for runtime, declared in sorted(engine_class.runtime_capabilities.items()):
                there = declared.get(key)
                if there is None:
                    continue
                cell += f"; {runtime}: {_LABELS.get(there.kind, 'yes')}"
                if there.reason:
                    notes.append(f"{name} in the {runtime} runtime, {row.title.lower()}: {there.reason}")
                    cell += f" [{len(notes)}]"
            cells.append(cell)
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("yes\\*: works, differently (see the note); no: not supported (skipped by the suite); "
                 "pending: not done yet (an expected failure until it is).  ")
    lines += [f"[{i}] {note}  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def readme_matrix(text: str) -> str | None:
    """The matrix section of a README's text, or None when it has none."""
    start, end = text.find(MATRIX_BEGIN), text.find(MATRIX_END)
    if start < 0 or end < start:
        return None
    return text[start + len(MATRIX_BEGIN):end].strip("\n") + "\n"


def write_matrix(readme: Path) -> None:
    """Replace the README's matrix section with the current one."""
    text = readme.read_text()
    start, end = text.find(MATRIX_BEGIN), text.find(MATRIX_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} lacks the {MATRIX_BEGIN} ... {MATRIX_END} section")
    readme.write_text(text[:start + len(MATRIX_BEGIN)] + "\n" + matrix_markdown() + text[end:])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        write_matrix(Path(argv[1]))
        print(f"{argv[1]}: engine matrix updated")
        return 0
    if argv:
        print("usage: python -m gotunnel_core.testing.matrix [--write README.md]", file=sys.stderr)
        return 2
    sys.stdout.write(matrix_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
