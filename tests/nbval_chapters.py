"""Run nbval over every chapter listed in _toc.yml.

Each chapter (a MyST Markdown notebook) is converted with jupytext into a temporary folder, a first cell is
prepended that changes the working directory to the chapter's own folder, and
``pytest --nbval-lax --nbval-current-env`` runs the notebooks. The converted notebooks carry no stored outputs, so
this proves that every cell runs; the chapters assert their own claims.

Usage: python tests/nbval_chapters.py [pytest options]  (called by ``make test``)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters(root: Path = ROOT) -> list[Path]:
    """Paths of every file in _toc.yml (root first), resolved to the .md file on disk."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [root / (name if name.endswith(".md") else name + ".md") for name in names]


def convert(chapters: list[Path], outdir: Path) -> list[Path]:
    notebooks = []
    for chapter in chapters:
        nb = jupytext.read(chapter, fmt="md:myst")        # MyST: a plain ```bash block is text, not a cell
        chdir = nbformat.v4.new_code_cell(f"import os\nos.chdir({str(chapter.parent)!r})")
        nb.cells.insert(0, chdir)
        target = outdir / chapter.relative_to(ROOT).with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        notebooks.append(target)
    return notebooks


def main(argv: list[str]) -> int:
    chapters = toc_chapters()
    missing = [str(c) for c in chapters if not c.exists()]
    if missing:
        print(f"_toc.yml lists files that do not exist: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ntkbook-nbval-") as tmp:
        notebooks = convert(chapters, Path(tmp))
        cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
               "-p", "no:cacheprovider", "--rootdir", tmp, "-c", "/dev/null", "--durations=0",
               *argv, *map(str, notebooks)]
        return subprocess.call(cmd, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
