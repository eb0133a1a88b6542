"""Chapter numbers that match the text: the root page is Chapter 1 and the numbered parts continue from 2.

``_toc.yml`` numbers Parts I and II (``numbered: true``) and Jupyter Book's sphinx-multitoc-numbering numbers their
chapters consecutively, but from 1, and a root page cannot be numbered in Sphinx. The book's text counts its first
page ("How to read and run this book") as Chapter 1 and the chapter on perturbation at initialization as Chapter 2.
With ``number_root_chapter = True`` this extension, after Sphinx has assigned section numbers, shifts every chapter
number up by one, numbers the root page and its sections as chapter 1, and has figure, table, equation and theorem
numbers (``numfig``) assigned again from the shifted chapter numbers.
"""
from __future__ import annotations

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.environment.collectors.toctree import TocTreeCollector

ROOT_CHAPTER = 1


def shifted(number: tuple | list | None, by: int) -> tuple | None:
    """`number` (a section number such as ``(2, 1)``) with its chapter part increased by `by`."""
    return None if not number else (number[0] + by, *number[1:])


def _shift_toc(toc: nodes.Node, by: int) -> None:
    """Shift the ``secnumber`` of every reference in a document's local table of contents."""
    for ref in toc.findall(nodes.reference):
        if ref.get("secnumber"):
            ref["secnumber"] = shifted(ref["secnumber"], by)


def _number_root(env: BuildEnvironment, root: str) -> None:
    """Number the root page ``ROOT_CHAPTER`` and its top-level sections ``ROOT_CHAPTER.k``."""
    secnums = {"": (ROOT_CHAPTER,)}
    env.titles[root]["secnumber"] = (ROOT_CHAPTER,)
    top = env.tocs[root].next_node(nodes.bullet_list)
    sections = top.next_node(nodes.bullet_list) if top else None
    for k, item in enumerate((sections or []), start=1):
        if not isinstance(item, nodes.list_item) or not isinstance(item[0], addnodes.compact_paragraph):
            continue
        ref = item[0][0]
        ref["secnumber"] = secnums[ref["anchorname"]] = (ROOT_CHAPTER, k)
    env.toc_secnumbers[root] = secnums


def renumber(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Make room for the root page as chapter 1; return the documents whose numbers were assigned again."""
    if not app.config.number_root_chapter or not env.toc_secnumbers:
        return []
    root = app.config.root_doc
    for docname, secnums in env.toc_secnumbers.items():
        env.toc_secnumbers[docname] = {anchor: shifted(n, ROOT_CHAPTER) for anchor, n in secnums.items()}
        _shift_toc(env.tocs[docname], ROOT_CHAPTER)
        title = env.titles.get(docname)
        if title is not None and title.get("secnumber"):
            title["secnumber"] = shifted(title["secnumber"], ROOT_CHAPTER)
    _number_root(env, root)
    TocTreeCollector().assign_figure_numbers(env)
    return sorted(env.toc_secnumbers)


def _root_title(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """The root page's entry in the sidebar (sphinx-book-theme's ``root_title``) carries its chapter number."""
    if app.config.number_root_chapter and "root_title" in context:
        context["root_title"] = f"{ROOT_CHAPTER}. {context['root_title']}"


def setup(app: Sphinx) -> dict:
    app.add_config_value("number_root_chapter", False, "env", [bool])
    app.connect("env-get-updated", renumber, priority=900)
    app.connect("html-page-context", _root_title, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
