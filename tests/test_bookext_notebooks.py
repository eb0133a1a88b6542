"""The first cell of a downloaded chapter notebook (bookext.notebooks): ntkcore, with the extras the chapter needs."""
from types import SimpleNamespace

import nbformat

from bookext import notebooks


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
