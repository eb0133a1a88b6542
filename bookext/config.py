"""The book's configuration, ``_config.yml``, for the builds that write their own variant of it elsewhere.

Jupyter Book reads a configuration file given by ``--config`` as it reads ``_config.yml``, except for the folders of
the local Sphinx extensions (``sphinx.local_extensions``), which it takes relative to that file. The student edition
(:mod:`assignments.student_book`) and the strict build of ``make test`` (:mod:`bookext.cached_build`) change a few
settings of :func:`book_config` and write it with :func:`write`; every other setting stays the one in ``_config.yml``.
"""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def book_config(root: Path = ROOT) -> dict:
    """The settings of ``root/_config.yml``, the folders of its local extensions made absolute."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    extensions = config["sphinx"].get("local_extensions") or {}
    config["sphinx"]["local_extensions"] = {name: str((root / folder).resolve())
                                            for name, folder in extensions.items()}
    return config


def write(config: dict, path: Path) -> Path:
    """Write `config` as a Jupyter Book configuration file at `path` (its folder created) and return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
