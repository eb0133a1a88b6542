"""The student edition of the HTML book: every chapter as in the book, with the exercises' solutions left out.

The edition is the book built with one more Sphinx extension, :mod:`assignments.hide_solutions`, which drops every
``{solution}`` block (the collapsed dropdowns and the gated solution blocks with their code) from the pages; hidden
checks are ``remove-cell`` in every edition. The configuration is the book's ``_config.yml`` with that extension
and a title that says which edition it is, written next to the output.

Usage: ``python -m assignments.student_book [--out DIR] [--no-execute]`` (``make book-student``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bookext.config import book_config, write

from .chapter import ROOT

OUT = ROOT / "_build" / "student"


def student_config(execute: bool = True, root: Path = ROOT) -> dict:
    """The book's configuration with solutions hidden (and, if not `execute`, no chapter executed)."""
    config = book_config(root)
    config["title"] = f"{config['title']} (student edition)"
    config["sphinx"]["local_extensions"]["hide_solutions"] = str(Path(__file__).parent)
    if not execute:
        config["execute"]["execute_notebooks"] = "off"
    return config


def build(out: Path = OUT, execute: bool = True, strict: bool = False) -> Path:
    """Build the student edition into `out`/_build/html and return that folder."""
    config_path = write(student_config(execute), out / "_config.yml")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", str(config_path), "--path-output", str(out)]
    subprocess.run(cmd + (["-W", "-n", "--keep-going"] if strict else []), check=True, cwd=ROOT)
    return out / "_build" / "html"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m assignments.student_book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (the HTML lands in OUT/_build/html)")
    parser.add_argument("--no-execute", action="store_true", help="do not execute the chapters (no outputs)")
    args = parser.parse_args(argv)
    html = build(args.out, execute=not args.no_execute)
    print(f"student edition: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
