"""The strict build of ``make test`` renders nbval's executions (bookext.cached_build, tests/nbval_chapters.py).

One small chapter runs under nbval, which saves its execution; stored in a jupyter-cache, MyST-NB renders the chapter
from it in cache mode without a kernel (a chapter it did not find there would fail to render: docutils gives MyST-NB
no file to execute). The build's check names a chapter that was executed or not read from the cache.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from docutils.core import publish_doctree
from jupyter_cache import get_cache
from myst_nb.docutils_ import Parser

from bookext import cached_build
from bookext.config import book_config

TESTS = Path(__file__).resolve().parent
CHAPTER = '''---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

```{code-cell} ipython3
:tags: [setup]
import os
print("ran in", os.path.basename(os.getcwd()))
```

```{code-cell} ipython3
```

```{code-cell} ipython3
6 * 7
```

```{code-cell} ipython3
print("printed")
7 * 6;  # a value that a notebook does not show
```
'''


def run_nbval(chapter: Path, root: Path, executions: Path) -> None:
    """nbval over `chapter` as ``make test`` runs it, saving its execution to `executions`, in a fresh process."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import nbval_chapters; "
            "sys.exit(nbval_chapters.run([Path(sys.argv[2])], ['-q'], Path(sys.argv[3]), root=Path(sys.argv[4])))")
    result = subprocess.run([sys.executable, "-c", code, str(TESTS), str(chapter), str(executions), str(root)],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def render_from_cache(chapter: Path, cache_path: Path, out: Path):
    """The chapter rendered by MyST-NB (docutils) with ``execution_mode: cache`` from `cache_path`."""
    settings = {"nb_execution_mode": "cache", "nb_execution_cache_path": str(cache_path), "nb_read_as_md": True,
                "nb_output_folder": str(out), "report_level": 4}
    return publish_doctree(chapter.read_text(), parser=Parser(), settings_overrides=settings)


def test_the_build_renders_the_outputs_of_nbval_without_executing(tmp_path):
    chapter = tmp_path / "book" / "tiny.md"
    chapter.parent.mkdir()
    chapter.write_text(CHAPTER)
    executions = tmp_path / "executions"
    run_nbval(chapter, tmp_path, executions)

    executed = nbformat.read(executions / "book" / "tiny.ipynb", as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert len(code) == 4, "the chdir cell that nbval_chapters prepends is not saved"
    assert [cell.execution_count for cell in code] == [1, None, 2, 3], "numbered as a fresh run numbers them"
    assert code[0].outputs[0].text == "ran in book\n", "nbval runs the chapter in its own folder"
    assert code[2].outputs[0].output_type == "execute_result" and code[2].outputs[0].execution_count == 2
    assert [output.output_type for output in code[3].outputs] == ["stream"], "the value after ';' is not shown"
    assert executed.metadata.language_info.name == "python" and executed.metadata.nbval.seconds > 0

    cache = get_cache(tmp_path / "cache")
    records = cached_build.store(cache, executions, book_config(), root=tmp_path)
    assert list(records) == [chapter]
    assert cached_build.cache_misses(cache, records, tmp_path) == [
        "book/tiny.md: not read from the cache by the build"]

    page = render_from_cache(chapter, cache.path, tmp_path / "out")
    assert "ran in book" in page.astext() and "42" in page.astext()
    assert page["nb_exec_data"]["runtime"] == executed.metadata.nbval.seconds
    assert cached_build.cache_misses(cache, records, tmp_path) == []

    cache.add_nb_to_project(str(chapter))               # what MyST-NB does before it executes a chapter itself
    assert cached_build.cache_misses(cache, records, tmp_path) == [
        "book/tiny.md: executed by the build, not found in the cache"]


def test_outputs_of_other_code_are_refused(tmp_path):
    chapter = tmp_path / "book" / "tiny.md"
    chapter.parent.mkdir()
    chapter.write_text(CHAPTER)
    notebook = cached_build.book_notebook(chapter, cached_build.myst_configs(book_config(), tmp_path))
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.source) for c in notebook.cells
                                            if c.cell_type == "code"])
    other.cells[2].source = "6 * 8"
    with pytest.raises(ValueError, match="book/tiny.md: nbval ran other code than the book shows, in code cell 3"):
        cached_build.with_outputs(notebook, other, "book/tiny.md")
    del other.cells[2:]
    with pytest.raises(ValueError, match="book/tiny.md: nbval ran 2 code cells, the book has 4"):
        cached_build.with_outputs(notebook, other, "book/tiny.md")
