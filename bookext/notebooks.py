"""Each chapter offered for download as a plain Jupyter notebook that runs anywhere, and the launch buttons.

A Sphinx extension (``sphinx.extra_extensions`` in ``_config.yml``). For every executed chapter it writes
``_sources/<page>.ipynb``, which the download menu offers: the executed notebook with its Markdown rewritten by
:mod:`bookext.markdown`, the book's LaTeX macros, and a first cell that installs ``ntkcore`` when it is missing. That
cell installs from the repository when ``_config.yml`` names one (``repository.url``), otherwise from the wheel of
``ntkcore`` that every build writes to ``_downloads/`` and that the role ``{ntkcore-wheel}`` links to.

With ``execute_notebooks: cache`` (the strict build of ``make test``, :mod:`bookext.cached_build`), MyST-NB 1.4
renders the outputs it takes from the jupyter-cache but writes the notebook it read, without them, to
``jupyter_execute/``; :func:`restore_cached_outputs` writes the notebook with its outputs there instead. When it
executes a chapter itself, MyST-NB 1.4 merges a cell's streams (``nb_merge_streams``) into the first piece in place
and writes that notebook: :func:`fix_merged_streams` has it merge copies, so that a downloaded notebook does not show
the later pieces twice.

Launch buttons derive from the repository URL alone: with a GitHub repository, a Colab button opens the chapter's
notebook from the branch ``gh-pages``, where Jupyter Book's ``ghp-import`` publishes the built book (``_sources/``
included). With no repository set, no launch button.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from docutils import nodes
from jupyter_cache import get_cache
from myst_nb.core import render as myst_nb_render
from sphinx.application import Sphinx

from . import markdown

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = "_downloads"
# What Jupyter Book puts in repository.url when _config.yml sets none: not this book's repository.
_PLACEHOLDER_REPOSITORY = "https://github.com/executablebooks/jupyter-book"
_INSTALL = '''\
# ntkcore, the library of this book{extras_note}, installed when this Python lacks it
# (on Colab, or in a new environment).
import importlib.util, pathlib, subprocess, sys
if any(importlib.util.find_spec(m) is None for m in {modules!r}):
    wheel = {wheel!r}
    if wheel.endswith(".whl") and not pathlib.Path(wheel).exists():
        raise FileNotFoundError({missing!r})
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", {requirement!r}])
    importlib.invalidate_caches()
'''
# Optional dependencies of ntkcore (its extras in pyproject.toml) that a chapter's code may import: module -> extra.
# A downloaded notebook that imports one installs ntkcore with that extra.
EXTRAS = {"grakel": "graphs", "dask": "distributed", "distributed": "distributed"}


def chapter_extras(cells) -> list[str]:
    """The extras of :data:`EXTRAS` whose module the code cells import (``import m`` or ``from m ...``), sorted."""
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    return sorted({extra for module, extra in EXTRAS.items()
                   if re.search(rf"^\s*(import|from)\s+{re.escape(module)}\b", code, flags=re.MULTILINE)})


def repository_url(app: Sphinx) -> str | None:
    """The book's repository URL from ``repository.url`` in ``_config.yml``; None when none is set."""
    url = (app.config.html_theme_options or {}).get("repository_url", "").rstrip("/")
    return url if url and url != _PLACEHOLDER_REPOSITORY else None


def build_wheel(out: Path) -> Path:
    """Build the wheel of ``ntkcore`` into `out` from a copy of the package (the working tree stays clean)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ntkcore-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="ntkcore-wheel-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, tmp)
        shutil.copytree(ROOT / "ntkcore", Path(tmp) / "ntkcore", ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(out), tmp], check=True)
    (wheel,) = out.glob("ntkcore-*.whl")
    return wheel


def install_cell(app: Sphinx, extras=()) -> str:
    """The source of the first cell of every downloaded notebook: install ``ntkcore`` (with ``extras``, e.g.
    ``["graphs"]`` for a chapter that imports grakel) when it or a module of those extras is missing."""
    wheel = app.env.ntkcore_wheel
    tag = f"[{','.join(extras)}]" if extras else ""
    if url := repository_url(app):
        requirement, local = f"ntkcore{tag} @ git+{url}", ""
    elif app.config.html_baseurl:
        requirement, local = f"ntkcore{tag} @ {app.config.html_baseurl.rstrip('/')}/{WHEEL_DIR}/{wheel}", ""
    else:
        requirement, local = f"{wheel}{tag}", wheel          # pip reads "file.whl[extra]" as the file with extras
    modules = ["ntkcore"] + [m for m, e in EXTRAS.items() if e in extras]
    missing = f"download {wheel} from the book's first page and put it next to this notebook"
    note = f" (with its extras {', '.join(extras)})" if extras else ""
    return _INSTALL.format(extras_note=note, modules=modules, wheel=local, requirement=requirement, missing=missing)


def plain_notebook(app: Sphinx, executed: Path, pagename: str) -> nbformat.NotebookNode:
    """The executed notebook of page `pagename` as a plain Jupyter notebook (see the module docstring)."""
    nb = nbformat.read(executed, as_version=4)
    source = Path(app.env.doc2path(pagename))
    labels = {**markdown.doc_titles(source.parent), **markdown.targets(nb.cells),
              **markdown.equation_numbers(nb.cells)}
    cites = _references(app)
    cited = markdown.cited_keys("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    cells = [nbformat.v4.new_code_cell(install_cell(app, chapter_extras(nb.cells))),
             nbformat.v4.new_markdown_cell(markdown.macros_cell(ROOT / "_config.yml"))]
    for cell in nb.cells:
        if "hidden-check" in cell.metadata.get("tags", []):        # the autograder's tests, not the reader's
            continue
        if cell.cell_type == "markdown":
            cell.source = markdown.plain_page(cell.source, labels, cites, source.parent, cited)
        cells.append(cell)
        if caption := markdown.figure(cell).get("caption"):                  # the book's caption under its figure
            name = labels[markdown.figure(cell)["name"]]
            cells.append(nbformat.v4.new_markdown_cell(f"*{name}.* {markdown.plain_markdown(caption, labels, cites)}"))
    nb.cells = cells
    return nb


def _references(app: Sphinx) -> dict:
    """The book's bibliography as :func:`bookext.markdown.references` gives it, parsed once per build (0.4 s)."""
    if getattr(app, "ntkcore_references", None) is None:
        app.ntkcore_references = markdown.references(ROOT / "book" / "references.bib")
    return app.ntkcore_references


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Write the plain notebook of an executed page to ``_sources/`` and point the download menu at it."""
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if doctree is None or not executed.exists():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(plain_notebook(app, executed, pagename), target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def restore_cached_outputs(app: Sphinx, doctree) -> None:
    """In cache mode, rewrite the page's notebook in ``jupyter_execute/`` with the outputs that MyST-NB took from
    the jupyter-cache, merged from the cache as MyST-NB merges them into the notebook it renders."""
    config = app.env.mystnb_config
    executed = Path(config.output_folder) / f"{app.env.docname}.ipynb"
    if config.execution_mode != "cache" or not executed.exists():
        return
    cache = get_cache(config.execution_cache_path)
    try:
        _, nb = cache.merge_match_into_notebook(nbformat.read(executed, as_version=4))
    except KeyError:                        # not in the cache: MyST-NB executed it, and wrote it with its outputs
        return
    executed.write_text(nbformat.writes(nb), encoding="utf-8")                 # as MyST-NB writes it


_MERGE_IN_PLACE = myst_nb_render.coalesce_streams


def _merge_copies(outputs: list) -> list:
    """MyST-NB's merge of a cell's streams (``coalesce_streams``) on copies of its outputs. MyST-NB 1.4 appends the
    text of the later pieces of a stream to its first piece in place, then writes the notebook whose outputs those
    are: the first piece holds all the text and the later pieces remain, shown twice. The page renders the same."""
    return _MERGE_IN_PLACE(copy.deepcopy(outputs))


def fix_merged_streams() -> None:
    """Have MyST-NB merge a cell's streams on copies of its outputs (:func:`_merge_copies`)."""
    myst_nb_render.coalesce_streams = _merge_copies


def add_launch_button(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """A Colab button on every page with a notebook, when the repository is on GitHub."""
    url = repository_url(app)
    if not context.get("ipynb_source") or not url or not url.startswith("https://github.com/"):
        return
    org_repo = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{org_repo}/blob/gh-pages/_sources/{context['ipynb_source']}"
    context["header_buttons"].append({
        "type": "group", "tooltip": "Launch interactive content", "icon": "fas fa-rocket", "label": "launch-buttons",
        "buttons": [{"type": "link", "text": "Colab", "tooltip": "Launch on Colab",
                     "icon": "_static/images/logo_colab.png", "url": colab}],
    })


def wheel_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{ntkcore-wheel}`text``: a link to the wheel of ``ntkcore`` that this build offers."""
    env = inliner.document.settings.env
    up = "../" * env.docname.count("/")
    return [nodes.reference(rawtext, text, refuri=f"{up}{WHEEL_DIR}/{env.ntkcore_wheel}")], []


def _on_builder_inited(app: Sphinx) -> None:
    app.env.ntkcore_wheel = build_wheel(Path(app.outdir) / WHEEL_DIR).name


def setup(app: Sphinx) -> dict:
    fix_merged_streams()
    app.connect("builder-inited", _on_builder_inited)
    app.connect("doctree-read", restore_cached_outputs)                    # once MyST-NB has written the notebook
    app.connect("html-page-context", offer_notebook, priority=500)           # before the theme's download menu
    app.connect("html-page-context", add_launch_button, priority=502)        # after the theme's header buttons
    app.add_role("ntkcore-wheel", wheel_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
