"""Sphinx extensions and helpers of the book's build, listed in ``_config.yml`` (``sphinx.extra_extensions``).

:mod:`bookext.markdown` rewrites the book's MyST Markdown as plain Markdown, for the notebooks read outside the
book (the chapter downloads and the course assignments); :mod:`bookext.notebooks` turns each executed chapter into
the plain Jupyter notebook offered for download, builds the ``ntkcore`` wheel that its first cell installs, and
derives the launch buttons from the repository URL.

:mod:`bookext.mathjax` serves MathJax from the built site (formulas typeset offline), :mod:`bookext.theme` repairs
the theme pair (one set of sidebar toggles and one search box, each inline script once, a valid colour mode) and
:mod:`bookext.numbering` numbers the chapters as the text counts them.

Helpers of the build: :mod:`bookext.config` gives ``_config.yml`` to the builds that write a variant of it, and
:mod:`bookext.cached_build` is the strict build of ``make test``, which renders the chapters' executions by nbval.
"""
