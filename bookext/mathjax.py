"""MathJax served from the built book itself, so that formulas typeset offline.

Sphinx's default ``mathjax_path`` loads an unpinned MathJax 3 from a CDN. This extension points it at
``_static/mathjax/tex-chtml.js`` instead and copies into the site only the files that component loads at run time:
the component itself (TeX input with the ``ams``, ``newcommand`` and ``configmacros`` packages that the book's
``mathjax3_config`` macros need, CommonHTML output), the CommonHTML web fonts, and the TeX extensions that its
``autoload`` package fetches on first use of a macro (``\\boldsymbol`` loads ``boldsymbol.js``): about 2 MB instead
of the 24 MB of the full distribution.

The files come from the ``sphinx-mathjax-offline`` distribution on the package index, pinned in
``requirements.txt``; its ``static/mathjax`` folder is MathJax 3.2.2's ``es5`` build, the same bytes as the
``es5`` folder of the npm package ``mathjax@3.2.2``. Its own Sphinx extension is not used: it copies every file.
"""
from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

MATHJAX_VERSION = "3.2.2"
COMPONENT = "tex-chtml.js"
# Run-time files of COMPONENT, relative to the MathJax folder: copied whole.
RUNTIME_FOLDERS = ("output/chtml/fonts/woff-v2", "input/tex/extensions")
SITE_FOLDER = "mathjax"  # under the site's _static/


def mathjax_source() -> Path:
    """The MathJax ``es5`` folder shipped by the installed ``sphinx-mathjax-offline`` distribution.

    Returns
    -------
    Path
        Folder holding ``tex-chtml.js``, checked to be MathJax ``MATHJAX_VERSION``.

    Raises
    ------
    ExtensionError
        If the distribution is missing or ships another MathJax version.
    """
    try:
        dist = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError as err:
        raise ExtensionError("bookext.mathjax needs sphinx-mathjax-offline (see requirements.txt)") from err
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    component = folder / COMPONENT
    if not component.is_file() or f'"{MATHJAX_VERSION}"' not in component.read_text(encoding="utf-8"):
        raise ExtensionError(f"{component} is not MathJax {MATHJAX_VERSION}")
    return folder


def copy_mathjax(source: Path, static_dir: Path) -> None:
    """Copy COMPONENT and its run-time folders from `source` to ``static_dir/mathjax``."""
    target = static_dir / SITE_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / COMPONENT, target / COMPONENT)
    for folder in RUNTIME_FOLDERS:
        shutil.copytree(source / folder, target / folder, dirs_exist_ok=True)


def _use_local_mathjax(app: Sphinx, config) -> None:
    mathjax_source()  # fail at the start of the build, not after it
    config.mathjax_path = f"{SITE_FOLDER}/{COMPONENT}"


def _copy_after_build(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(mathjax_source(), Path(app.outdir) / "_static")


def setup(app: Sphinx) -> dict:
    # MathJax on every page, also on search.html, where _static/search-math.js typesets the results' summaries.
    app.set_html_assets_policy("always")
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_after_build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
