"""The book's frame: every chapter file in book/ is in _toc.yml and every _toc.yml entry exists."""
from pathlib import Path

import jupytext
import pytest
import yaml

from nbval_chapters import ROOT, toc_chapters

BOOK = ROOT / "book"
# Back-matter pages that are plain MyST text, not notebooks.
TEXT_PAGES = {"appendix_instructors", "bibliography"}


def chapter_files():
    """Markdown chapters in book/, excluding shared includes (folders starting with an underscore)."""
    return sorted(p for p in BOOK.rglob("*.md") if not any(part.startswith("_") for part in p.relative_to(BOOK).parts))


def test_every_chapter_is_in_toc():
    listed = {p.resolve() for p in toc_chapters()}
    orphans = [str(p.relative_to(ROOT)) for p in chapter_files() if p.resolve() not in listed]
    assert not orphans, f"chapter files not listed in _toc.yml: {orphans}"


def test_every_toc_entry_exists():
    missing = [str(p) for p in toc_chapters() if not p.exists()]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_no_notebooks_committed_in_book():
    notebooks = [str(p.relative_to(ROOT)) for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    assert not notebooks, f"commit chapters as MyST .md only, not .ipynb: {notebooks}"


@pytest.mark.parametrize("chapter", [p for p in toc_chapters() if p.stem not in TEXT_PAGES], ids=lambda p: p.stem)
def test_chapter_is_a_myst_notebook(chapter):
    """Every chapter carries a jupytext header with a python3 kernel, so it executes and opens as a notebook."""
    text = chapter.read_text()
    assert text.startswith("---\n"), f"{chapter.name}: missing the jupytext front matter"
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["jupytext"]["text_representation"]["format_name"] == "myst"
    assert meta["kernelspec"]["name"] == "python3"
    nb = jupytext.read(chapter)
    assert any(c.cell_type == "code" for c in nb.cells), f"{chapter.name} has no code cell"


def test_config_excludes_and_extensions():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    for pattern in (".venv", "_build", "tests", "benchmarks"):
        assert pattern in config["exclude_patterns"]
    assert config["execute"]["execute_notebooks"] == "force", "the test build must execute fresh, not from a cache"
    extensions = config["sphinx"]["extra_extensions"]
    assert {"sphinx_proof", "sphinx_exercise"} <= set(extensions)
    for bib in config["bibtex_bibfiles"]:
        assert (ROOT / bib).exists()


MAX_CODE_LINE = 90  # characters: longer lines scroll sideways in the book's code cells


def long_code_lines(chapter: Path) -> list[str]:
    """'cell N, line M: length' for every line of a code cell of `chapter` over MAX_CODE_LINE characters."""
    cells = [c for c in jupytext.read(chapter).cells if c.cell_type == "code"]
    return [f"cell {i}, line {j}: {len(line)}" for i, cell in enumerate(cells, 1)
            for j, line in enumerate(cell.source.splitlines(), 1) if len(line) > MAX_CODE_LINE]


@pytest.mark.parametrize("chapter", chapter_files(), ids=lambda p: p.stem)
def test_code_lines_fit_the_page(chapter):
    long = long_code_lines(chapter)
    assert not long, f"{chapter.name}: code lines over {MAX_CODE_LINE} characters: {long}"
