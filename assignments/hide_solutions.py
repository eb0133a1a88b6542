"""Sphinx extension of the book's student edition: every exercise solution is left out of the pages.

sphinx-exercise's own ``hide_solutions`` setting drops ``{solution}`` blocks but not gated ones
(``{solution-start}``/``{solution-end}``, which hold the code cells of the coding exercises): their content stays on
the page and the build fails on the orphaned end marker. This transform runs after sphinx-exercise has merged each
gated block into one solution node, and removes every solution node, gated or not.
"""
from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node


class RemoveSolutions(SphinxTransform):
    """Remove every solution node from the document (after the gated blocks are merged, priority 10)."""

    default_priority = 20

    def apply(self):
        for node in list(self.document.findall(solution_node)):
            node.parent.remove(node)


def setup(app):
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
