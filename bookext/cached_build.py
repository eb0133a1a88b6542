"""The strict build of ``make test``, with every chapter's outputs from the nbval run just before it.

``make test`` runs every chapter under nbval, which writes each executed chapter to a folder
(``tests/nbval_chapters.py --save-executions DIR``), and then builds the book strictly (``-W -n``). Executing the
chapters again in that build would double the time they take; instead, :func:`build` stores nbval's executions in
a jupyter-cache and builds with ``execute_notebooks: cache`` from it, every other setting being ``_config.yml``'s.

MyST-NB looks a chapter up in the cache by the hash that jupyter-cache computes over the notebook MyST-NB reads from
the chapter's Markdown: the source and metadata of every code cell and the notebook's kernelspec. So the notebook
stored for a chapter is that very notebook, read by MyST-NB's reader with the book's MyST configuration
(:func:`book_notebook`), with the outputs and execution counts of nbval's run and its kernel's ``language_info``
(:func:`with_outputs`); the build then renders exactly what a fresh execution would give it. A chapter that the
build did not find in the cache would be executed by the build, silently; :func:`build` fails naming every chapter
that the build executed or did not take from the cache. The executions are used once: :func:`build` removes them,
so that no later build can take outputs from an older version of the code.

Usage: ``python -m bookext.cached_build DIR`` (``make test``). ``make book``, and ``make test-build`` alone,
execute every chapter fresh (``execute_notebooks: force`` in ``_config.yml``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_book.config import get_final_config
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn, JupyterCacheAbstract
from jupyter_cache.cache.db import NbCacheRecord
from myst_nb.core.config import NbParserConfig
from myst_nb.core.read import create_nb_reader
from myst_parser.config.main import MdParserConfig

from .config import ROOT, book_config, write


def myst_configs(config: dict, root: Path = ROOT) -> tuple[MdParserConfig, NbParserConfig]:
    """The MyST and MyST-NB configurations of a build with the Jupyter Book configuration `config`, made as those
    Sphinx extensions make them from the Sphinx configuration that Jupyter Book derives from `config`."""
    sphinx, _ = get_final_config(user_yaml=config, cli_config={"latex_individualpages": False}, sourcedir=root)

    def settings(cls, prefix, sphinx_field):
        return cls(**{name: sphinx[prefix + name] for name, _, field in cls().as_triple()
                      if prefix + name in sphinx and sphinx_field(field)})

    return (settings(MdParserConfig, "myst_", lambda field: "sphinx" not in field.metadata.get("omit", [])),
            settings(NbParserConfig, "nb_", lambda field: not field.metadata.get("sphinx_exclude")))


def book_notebook(chapter: Path, configs: tuple[MdParserConfig, NbParserConfig]) -> nbformat.NotebookNode | None:
    """`chapter` as MyST-NB reads it in a build with `configs` (:func:`myst_configs`); None for a page that MyST-NB
    does not read as a notebook (Markdown without a notebook's front matter)."""
    text = chapter.read_text(encoding="utf-8")
    reader = create_nb_reader(str(chapter), *configs, text)
    return None if reader is None else reader.read(text)


def with_outputs(notebook: nbformat.NotebookNode, executed: nbformat.NotebookNode,
                 name: str) -> nbformat.NotebookNode:
    """`notebook` (:func:`book_notebook`) with the outputs and execution counts of the code cells of `executed` and
    its ``language_info``; a ValueError naming the chapter `name` when the two notebooks' code differs."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    ran = [cell for cell in executed.cells if cell.cell_type == "code"]
    for index, (cell, run) in enumerate(zip(code, ran)):
        if cell.source != run.source:
            raise ValueError(f"{name}: nbval ran other code than the book shows, in code cell {index + 1}:\n"
                             f"{run.source[:300]}\ninstead of\n{cell.source[:300]}")
    if len(code) != len(ran):
        raise ValueError(f"{name}: nbval ran {len(ran)} code cells, the book has {len(code)}")
    for cell, run in zip(code, ran):
        cell.outputs, cell.execution_count = run.outputs, run.execution_count
    notebook.metadata["language_info"] = executed.metadata["language_info"]
    return notebook


def store(cache: JupyterCacheAbstract, executions: Path, config: dict,
          root: Path = ROOT) -> dict[Path, NbCacheRecord]:
    """Store in `cache` every chapter of `root` that nbval executed, with its outputs, for a build with `config`.

    `executions` is the folder where nbval wrote each chapter ``<path>.md`` it ran to the end as ``<path>.ipynb``.
    Pages that MyST-NB does not read as notebooks are left out. Returns each stored chapter's cache record.
    """
    configs = myst_configs(config, root)
    records = {}
    for path in sorted(executions.rglob("*.ipynb")):
        chapter = root / path.relative_to(executions).with_suffix(".md")
        notebook = book_notebook(chapter, configs)
        if notebook is None:
            continue
        executed = nbformat.read(path, as_version=4)
        bundle = CacheBundleIn(with_outputs(notebook, executed, str(chapter.relative_to(root))), str(chapter),
                               data={"execution_seconds": executed.metadata["nbval"]["seconds"]})
        records[chapter] = cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
    return records


def cache_misses(cache: JupyterCacheAbstract, records: dict[Path, NbCacheRecord], root: Path = ROOT) -> list[str]:
    """What went wrong in a build from `cache`, which :func:`store` filled (its `records`): every chapter that the
    build executed (MyST-NB adds a chapter to the cache's project when it executes it), and every stored chapter that
    the build did not read from the cache (reading one touches its record). Empty when the build executed nothing."""
    problems = [f"{Path(record.uri).relative_to(root)}: executed by the build, not found in the cache"
                for record in cache.list_project_records()]
    for chapter, record in records.items():
        if cache.get_cache_record(record.pk).accessed <= record.accessed:
            problems.append(f"{chapter.relative_to(root)}: not read from the cache by the build")
    return problems


def build(executions: Path, root: Path = ROOT) -> int:
    """The strict build of the book in `root` with the outputs of `executions` (removed here); its exit status."""
    if not executions.is_dir():
        print(f"no executions in {executions}: run `tests/nbval_chapters.py --save-executions {executions}` first",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ntkbook-cache-") as tmp:
        config = book_config(root)
        config["execute"].update(execute_notebooks="cache", cache=str(Path(tmp) / "jupyter_cache"))
        cache = get_cache(config["execute"]["cache"])
        try:
            records = store(cache, executions, config, root)
        finally:
            shutil.rmtree(executions)
        jupyter_book = Path(sys.executable).parent / "jupyter-book"
        # --all: every page read again, each chapter's outputs from this cache and none from an earlier build
        status = subprocess.call([str(jupyter_book), "build", str(root), "--config",
                                  str(write(config, Path(tmp) / "_config.yml")), "-W", "-n", "--keep-going", "--all"],
                                 cwd=root)
        if problems := cache_misses(cache, records, root):
            print("The strict build did not take every chapter from nbval's executions:\n  "
                  + "\n  ".join(problems), file=sys.stderr)
            return status or 1
        print(f"{len(records)} chapters' outputs from nbval's executions; the build executed none.")
        return status


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bookext.cached_build DIR  (DIR: tests/nbval_chapters.py --save-executions DIR)",
              file=sys.stderr)
        return 2
    return build(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
