"""The chapter notebooks that the built book offers for download: plain Jupyter, and runnable outside the repository.

Runs on the output of the strict build (the fixture ``book_html``). The run test takes
the lightest chapter's downloaded ``.ipynb`` and the ``ntkcore`` wheel that the book offers, makes a fresh virtual
environment holding only ipykernel, and executes the notebook there: its first cell installs ``ntkcore`` from the
wheel, with the published dependencies from the wheelhouse that ``make install`` fills (``.venv/wheelhouse``, or
``WHEELHOUSE``), offline (``pip --no-index``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(os.environ.get("WHEELHOUSE", ROOT / ".venv" / "wheelhouse"))
LIGHTEST = "appendix_kernels"
# MyST that plain Jupyter shows as raw text: roles, directive fences, targets, labelled equations.
MYST = re.compile(r"\{[\w:-]+\}`|^(`{3,}|:{3,})\{|^\([\w:.-]+\)=\s*$|^\$\$\s*\([\w:.-]+\)\s*$", re.MULTILINE)


def downloads(html: Path) -> tuple[list[Path], Path]:
    """The downloadable chapter notebooks and the ntkcore wheel of the built book in `html`."""
    wheels = sorted((html / "_downloads").glob("ntkcore-*.whl"))
    assert len(wheels) == 1, f"the book offers one ntkcore wheel in _downloads/: {wheels}"
    return sorted((html / "_sources" / "book").glob("*.ipynb")), wheels[0]


def test_every_chapter_downloads_as_plain_jupyter(book_html):
    notebooks, wheel = downloads(book_html)
    assert {p.stem for p in notebooks} >= {LIGHTEST, "perturbation", "intro"}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0].source
        assert nb.cells[0].cell_type == "code" and "'ntkcore'" in first and wheel.name in first, path
        # a chapter that imports grakel installs ntkcore's extra "graphs", which brings it; the others do not
        assert ("[graphs]" in first) == any("import grakel" in c.source or "from grakel" in c.source
                                            for c in nb.cells if c.cell_type == "code"), path
        code = [cell for cell in nb.cells[1:] if cell.cell_type == "code"]
        # executed, in every build: the strict build of `make test` takes the outputs from a jupyter-cache
        assert any(cell.outputs for cell in code), f"{path.name}: a downloaded notebook without outputs"
        assert all(cell.execution_count for cell in code if cell.source.strip()), f"{path.name}: a cell not run"
        page = book_html / "book" / f"{path.stem}.html"
        assert f'_sources/book/{path.name}"' in page.read_text(), f"{page.name} offers no .ipynb download"
        for cell in nb.cells:
            if cell.cell_type == "markdown" and (m := MYST.search(cell.source)):
                pytest.fail(f"{path.name}: MyST left in a Markdown cell: {m.group(0)!r} in\n{cell.source[:300]}")
    intro = (book_html / "book" / "intro.html").read_text()
    assert f"../_downloads/{wheel.name}" in intro, "the intro links to the wheel"


def test_no_launch_button_without_a_repository(book_html):
    """_config.yml names no repository: no launch button (it pointed at Jupyter Book's own repository)."""
    page = (book_html / "book" / f"{LIGHTEST}.html").read_text()
    assert "launch-buttons" not in page and "colab.research.google.com" not in page


def test_downloaded_notebook_runs_in_a_fresh_environment(book_html, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    if not any(WHEELHOUSE.glob("torch-*.whl")):
        pytest.fail(f"no wheelhouse in {WHEELHOUSE}: `make install` fills it")
    notebooks, wheel = downloads(book_html)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(wheel, work)
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
    python = env_dir / "bin" / "python"
    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "https_proxy": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "JUPYTER_PATH": str(tmp_path / "jupyter")}
    for key, value in offline.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)          # the kernel must not see the repository's ntkcore
    subprocess.run([python, "-m", "pip", "install", "--quiet", "ipykernel"], check=True)
    spec = tmp_path / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "fresh", "language": "python"}))
    nb = nbformat.read(book_html / "_sources" / "book" / f"{LIGHTEST}.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="fresh", timeout=600, resources={"metadata": {"path": str(work)}}).execute()
    where = subprocess.run([python, "-c", "import ntkcore; print(ntkcore.__file__)"], capture_output=True, text=True,
                           cwd=work)
    assert str(env_dir) in where.stdout, f"ntkcore should come from the wheel in the fresh environment: {where}"
