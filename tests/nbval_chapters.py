"""Run nbval over every chapter listed in _toc.yml.

Each chapter (a MyST Markdown notebook) is converted with jupytext into a temporary folder, a first cell is
prepended that changes the working directory to the chapter's own folder, and
``pytest --nbval-lax --nbval-current-env`` runs the notebooks. The converted notebooks carry no stored outputs, so
this proves that every cell runs; the chapters assert their own claims.

With ``--save-executions DIR`` (``make test``), every chapter whose cells all passed is also written to DIR as the
notebook that nbval executed (:class:`SaveExecutions`), for the strict build that follows (bookext/cached_build.py):
so the chapters execute once in ``make test``, not once here and again in the build.

Usage: python tests/nbval_chapters.py [--save-executions DIR] [pytest options]  (called by ``make test``)
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from IPython.core.displayhook import DisplayHook
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters(root: Path = ROOT) -> list[Path]:
    """Paths of every file in _toc.yml (root first), resolved to the .md file on disk."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [root / (name if name.endswith(".md") else name + ".md") for name in names]


def convert(chapters: list[Path], outdir: Path, root: Path = ROOT) -> list[Path]:
    notebooks = []
    for chapter in chapters:
        nb = jupytext.read(chapter, fmt="md:myst")        # MyST: a plain ```bash block is text, not a cell
        chdir = nbformat.v4.new_code_cell(f"import os\nos.chdir({str(chapter.parent)!r})")
        nb.cells.insert(0, chdir)
        target = outdir / chapter.relative_to(root).with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        notebooks.append(target)
    return notebooks


def silenced(source: str) -> bool:
    """Whether IPython leaves the value of the code cell `source` out of the notebook (the cell ends in ``;``), as
    it decides in a kernel that keeps each cell's history: it looks at the last cell of the history, transformed."""
    return bool(source.strip()) and DisplayHook.semicolon_at_end_of_expression(
        TransformerManager().transform_cell(source))


def executed(nb: nbformat.NotebookNode, outputs: list[list], language_info: dict,
             seconds: float) -> nbformat.NotebookNode:
    """The converted chapter `nb` as the book's build leaves it when it executes the chapter, from nbval's run.

    `outputs` are the outputs of every code cell of `nb` (the prepended chdir cell first), as nbval's kernel returned
    them; `language_info` is the kernel's. The chdir cell is dropped, and the non-empty code cells are numbered 1, 2,
    ... as a kernel running the chapter alone numbers them (nbval executes without history, so its counts do not
    advance). Without history, IPython also shows the value of a cell that ends in ``;``: that value is dropped, as
    the build's kernel silences it (:func:`silenced`). The streams of one name in a cell come joined, as nbval joins
    them, where the build's execution keeps the pieces in which the kernel happened to flush them; the book renders
    both alike (``nb_merge_streams``). The notebook's metadata ``nbval.seconds`` holds the seconds that nbval took,
    kernel start included.
    """
    nb = copy.deepcopy(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(code) != len(outputs):
        raise ValueError(f"{len(outputs)} cells' outputs for a notebook of {len(code)} code cells")
    for cell, cell_outputs in zip(code, outputs):
        cell.outputs = copy.deepcopy(cell_outputs)
    del nb.cells[0]                                                 # the chdir cell that convert() prepended
    count = 0
    for cell in (cell for cell in nb.cells if cell.cell_type == "code"):
        if cell.source.strip():                                     # a kernel does not count an empty cell
            count += 1
            cell.execution_count = count
        if silenced(cell.source):
            cell.outputs = [output for output in cell.outputs if output.output_type != "execute_result"]
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = cell.execution_count
    nb.metadata["language_info"] = language_info
    nb.metadata["nbval"] = {"seconds": round(seconds, 3)}
    return nb


class SaveExecutions:
    """A pytest plugin: every notebook whose cells all passed under nbval, written to `out` as it was executed.

    nbval runs each code cell in the notebook's kernel and keeps what the kernel returned on the test item
    (``test_outputs``, with the streams of one name joined as nbval compares them); in lax mode it stores nothing.
    At the end of the session this plugin writes each notebook of `rootdir` whose every cell passed to the same
    relative path under `out`, as :func:`executed` makes it. A notebook with a failed or skipped cell is not written.
    """

    def __init__(self, rootdir: Path, out: Path):
        self.rootdir, self.out = rootdir, out
        self.seconds: dict[str, float] = defaultdict(float)     # notebook (its node id) -> setup, run, teardown
        self.incomplete: set[str] = set()
        self.language_info: dict[str, dict] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        result = yield
        if getattr(item, "cell_num", None) == 0:                   # the kernel of this notebook is up: ask it
            reply = item.parent.kernel.kc.kernel_info(reply=True, timeout=60)
            self.language_info[item.parent.nodeid] = reply["content"]["language_info"]
        return result

    def pytest_runtest_logreport(self, report):
        notebook = report.nodeid.split("::")[0]
        self.seconds[notebook] += report.duration
        if not report.passed:
            self.incomplete.add(notebook)

    def pytest_sessionfinish(self, session):
        cells = defaultdict(list)
        for item in session.items:
            cells[item.parent].append(item)
        for notebook, items in cells.items():
            if notebook.nodeid in self.incomplete or any(item.test_outputs is None for item in items):
                continue
            nb = executed(notebook.nb, [item.test_outputs for item in items],
                          self.language_info[notebook.nodeid], self.seconds[notebook.nodeid])
            target = self.out / Path(notebook.path).relative_to(self.rootdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)


def run(chapters: list[Path], pytest_args: list[str], save_executions: Path | None = None,
        root: Path = ROOT) -> int:
    """nbval over `chapters` (files under `root`), with `pytest_args`; pytest's exit status. With `save_executions`,
    that folder is emptied and receives each chapter's execution (:class:`SaveExecutions`)."""
    plugins = []
    with tempfile.TemporaryDirectory(prefix="ntkbook-nbval-") as tmp:
        notebooks = convert(chapters, Path(tmp), root)
        if save_executions:
            shutil.rmtree(save_executions, ignore_errors=True)           # never an execution of an earlier run
            save_executions.mkdir(parents=True)
            plugins.append(SaveExecutions(Path(tmp), save_executions.resolve()))
        cmd = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
               "-p", "no:cacheprovider", "--rootdir", tmp, "-c", "/dev/null", "--durations=0",
               *pytest_args, *map(str, notebooks)]
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            return int(pytest.main(cmd, plugins=plugins))
        finally:
            os.chdir(cwd)


def main(argv: list[str]) -> int:
    options = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    options.add_argument("--save-executions", type=Path, metavar="DIR")
    args, pytest_args = options.parse_known_args(argv)
    chapters = toc_chapters()
    missing = [str(c) for c in chapters if not c.exists()]
    if missing:
        print(f"_toc.yml lists files that do not exist: {missing}", file=sys.stderr)
        return 2
    return run(chapters, pytest_args, args.save_executions)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
