"""Course assignments built from the book's chapters, and their autograding (otter-grader).

A chapter's coding exercises follow one authoring convention, described in the book's appendix "Guide for
instructors" and in the README's "Contributing a chapter":

* code cells tagged ``setup`` are what the exercises need (imports, data, the chapter's parameters);
* each coding exercise is a gated ``{exercise-start}``/``{exercise-end}`` block holding one cell tagged
  ``answer`` (a stub: the signature, a docstring, ``raise NotImplementedError`` or ``...``), followed by a gated
  ``{solution-start}``/``{solution-end}`` block holding the reference solution in one cell tagged ``solution``,
  then one cell tagged ``check`` (the self-check a student sees) and one or more cells tagged ``hidden-check``
  (with ``remove-cell``: stronger grading tests that only the autograder carries).

Modules: :mod:`assignments.chapter` reads a chapter into that structure and lists the ways it breaks the
convention; :mod:`assignments.build` writes the student notebook, the instructor notebook and the autograder of
every chapter (``make assignments``); :mod:`assignments.grade` grades a folder of submissions into a CSV
(``make grade SUBMISSIONS=dir``).
"""
