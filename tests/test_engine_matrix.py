"""The README's engine matrix is generated from the suite's behaviours and each engine's own
capability declarations; this checks it is current for the engines shipped here."""

from __future__ import annotations

from pathlib import Path

from gotunnel_core.testing.matrix import FIRST, MATRIX_BEGIN, MATRIX_END, installed_engines, matrix_markdown, readme_matrix

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_engine_matrix_matches_the_capability_declarations() -> None:
    engines = installed_engines()
    assert set(FIRST) <= set(engines), f"the matrix needs every shipped engine installed; have {sorted(engines)}"
    current = readme_matrix(README.read_text())
    assert current is not None, f"README.md lacks the {MATRIX_BEGIN} ... {MATRIX_END} section"
    assert current == matrix_markdown(engines), \
        "README's engine matrix is stale: run python -m gotunnel_core.testing.matrix --write README.md"
