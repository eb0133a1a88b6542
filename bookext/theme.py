"""Repairs to the theme pair that Jupyter Book 1.0.4 uses (sphinx-book-theme 1.3.0 on pydata-sphinx-theme 0.17.1).

* No top navbar. pydata-sphinx-theme 0.17 fills ``navbar_persistent`` with a search field unless a project sets it,
  and so renders its own navbar with a second search box and a second pair of ``.primary-toggle`` and
  ``.secondary-toggle`` buttons. Its script binds the first of each (``document.querySelector``): the hidden navbar
  buttons, so the visible ☰ and ☷ buttons of the article header did nothing below 1200 px (pydata-sphinx-theme
  issue 2451, sphinx-book-theme issue 988). An empty ``navbar_persistent`` leaves every navbar slot empty, the
  theme skips the navbar, and the article header's buttons and the sidebar's search field are the only ones.
* A light/dark mode to start from. With none set, the page starts in mode "" and the theme's script reports
  "Got invalid theme mode" as a console error on every first visit; ``default_mode = "auto"`` (a template
  variable, in ``html_context``) follows the system.
* Each inline script once per page. sphinx-thebe and sphinx-togglebutton add their configuration scripts again
  when Sphinx reads the sources, so every page declared ``const THEBE_JS_URL`` twice: a SyntaxError in the console.
"""
from __future__ import annotations

from sphinx.application import Sphinx


def _theme_options(app: Sphinx, config) -> None:
    config.html_theme_options.setdefault("navbar_persistent", [])
    config.html_context = {"default_mode": "auto", **config.html_context}


def unique_scripts(scripts: list) -> list:
    """`scripts` (Sphinx's ``_JavaScript`` assets) without repeats of the same file or inline body, first kept."""
    seen, kept = set(), []
    for script in scripts:
        key = (script.filename or None, script.attributes.get("body"))  # inline scripts: filename None or ""
        if key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(context["script_files"])


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _theme_options)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
