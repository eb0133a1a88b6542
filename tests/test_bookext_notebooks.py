"""A downloaded chapter notebook (bookext.notebooks): its first cell installs ntkcore with the extras the chapter
needs, and its outputs are those the chapter printed, each line once."""
from types import SimpleNamespace

import nbformat
from docutils.core import publish_doctree
from myst_nb.docutils_ import Parser

from bookext import notebooks

PIECES = '''---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Streams

```{code-cell} ipython3
import time
print("first", flush=True)
time.sleep(0.2)
print("second")
```
'''


def _app(repository="", baseurl=""):
    return SimpleNamespace(env=SimpleNamespace(ntkcore_wheel="ntkcore-1.0-py3-none-any.whl"),
                           config=SimpleNamespace(html_theme_options={"repository_url": repository},
                                                  html_baseurl=baseurl))


def test_chapter_extras_follow_the_imports_of_code_cells():
    code, text = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    assert notebooks.chapter_extras([code("import numpy as np"), text("we could `import grakel`")]) == []
    assert notebooks.chapter_extras([code("x = 1\nfrom grakel.kernels import WeisfeilerLehman")]) == ["graphs"]
    assert notebooks.chapter_extras([code("  import grakel")]) == ["graphs"]
    assert notebooks.chapter_extras([code("import grakelx")]) == []


def test_install_cell_installs_the_extras_from_every_source():
    plain = notebooks.install_cell(_app())
    assert "['ntkcore']" in plain and "'ntkcore-1.0-py3-none-any.whl'" in plain and "[graphs]" not in plain
    local = notebooks.install_cell(_app(), ["graphs"])
    assert "['ntkcore', 'grakel']" in local and "'ntkcore-1.0-py3-none-any.whl[graphs]'" in local
    web = notebooks.install_cell(_app(baseurl="https://book.example/"), ["graphs"])
    assert "'ntkcore[graphs] @ https://book.example/_downloads/ntkcore-1.0-py3-none-any.whl'" in web
    git = notebooks.install_cell(_app(repository="https://github.com/o/r"), ["graphs"])
    assert "'ntkcore[graphs] @ git+https://github.com/o/r'" in git
    for cell in (plain, local, web, git):
        compile(cell, "install", "exec")          # valid Python


def test_a_stream_in_pieces_is_written_once(tmp_path):
    """MyST-NB executing a chapter merges the pieces of a stream on the page; the notebook it writes, which the book
    offers for download, keeps each piece once (:func:`bookext.notebooks.fix_merged_streams`, as the build sets)."""
    notebooks.fix_merged_streams()
    settings = {"nb_execution_mode": "force", "nb_execution_in_temp": True, "nb_read_as_md": True,
                "nb_merge_streams": True, "nb_output_folder": str(tmp_path), "report_level": 4}
    page = publish_doctree(PIECES, parser=Parser(), settings_overrides=settings)
    written = nbformat.read(tmp_path / "processed.ipynb", as_version=4)
    (cell,) = [cell for cell in written.cells if cell.cell_type == "code"]
    pieces = [output.text for output in cell.outputs if output.output_type == "stream"]
    assert len(pieces) >= 2, "the kernel sent the stream in pieces (at times three: 'second' and its newline)"
    assert "".join(pieces) == "first\nsecond\n"                   # was "first\nsecond\nsecond\n"
    assert "first\nsecond" in page.astext()                       # one block on the page
