"""Write every chapter's assignment: the student notebook, the instructor notebook and the otter autograder.

For each chapter, an otter-grader master notebook is assembled from the chapter's setup cells and coding exercises
(:mod:`assignments.chapter`), and ``otter assign`` turns it into the two notebooks and ``autograder.zip``. In the
master notebook each exercise is one otter question worth one point, all or nothing: its tests are the chapter's
check cell and its hidden checks (plus any private ones, see ``--hidden``), all hidden from the student notebook,
which keeps the check cell as a plain cell instead. Output, for each chapter::

    <out>/<chapter>/student/<chapter>.ipynb       stubs in place, no solutions, no hidden tests
    <out>/<chapter>/instructor/<chapter>.ipynb    the same notebook with the reference solutions
    <out>/<chapter>/autograder.zip                what ``otter run`` (and ``make grade``) grades against

Usage: ``python -m assignments.build [--out DIR] [--hidden DIR] [CHAPTER ...]`` (``make assignments``).
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import yaml

from bookext.markdown import doc_titles, macros_cell, plain_markdown

from . import chapter as chapters_mod
from .chapter import ROOT, Chapter, CodingExercise

OUT = ROOT / "_build" / "assignments"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
ASSIGNMENT_CONFIG = {
    "init_cell": False, "check_all_cell": False, "export_cell": False, "run_tests": False,
    "solutions_pdf": False, "template_pdf": False, "generate": True,
    "tests": {"files": False, "ok_format": False},
}
_TEST_FUNCTION = '''\
def test_{name}(env):
    import traceback
    source = {source!r}
    try:
        exec(compile(source, {where!r}, "exec"), dict(env))
    except Exception as err:
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == {where!r}]
        at = source.splitlines()[lines[-1] - 1].strip() if lines else ""
        kind = "" if isinstance(err, AssertionError) else f"{{type(err).__name__}}: "
        raise AssertionError(f"{{kind}}{{err}}\\n  in the {what} at: {{at}}") from None
'''


def otter_test_cell(source: str, name: str, label: str, what: str) -> str:
    """An otter test cell (hidden) running `source` in a copy of the notebook's namespace."""
    config = '""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n'
    return config + _TEST_FUNCTION.format(name=name, source=source, where=f"{label} {what}", what=what)


def private_tests(hidden_dir: Path | None, label: str) -> list[str]:
    """Extra hidden tests for exercise `label` from `hidden_dir/<label>.py` (cells separated by '# %%' lines)."""
    if hidden_dir is None or not (hidden_dir / f"{label}.py").exists():
        return []
    parts = re.split(r"^# %%.*$", (hidden_dir / f"{label}.py").read_text(), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def question_cells(ex: CodingExercise, targets: dict[str, str], hidden_dir: Path | None) -> list:
    """The otter question of one exercise, then its check as a plain cell that the student notebook keeps."""
    v4 = nbformat.v4
    quote = "'" * 3 if '"' * 3 in ex.answer[0] else '"' * 3     # the stub is a string in the instructor notebook
    solution = (f"{quote} # BEGIN PROMPT\n{ex.answer[0].strip()}\n{quote} # END PROMPT\n"
                f"# BEGIN SOLUTION NO PROMPT\n{ex.solution[0].strip()}\n# END SOLUTION")
    tests = [otter_test_cell(ex.check[0], "check", ex.label, "check")]
    extra = ex.hidden + private_tests(hidden_dir, ex.label)
    tests += [otter_test_cell(src, f"hidden_{i}", ex.label, "hidden test") for i, src in enumerate(extra, 1)]
    title = plain_markdown(ex.title.removesuffix("(coding)").strip(), targets)
    prompt = f"## Exercise: {title}\n\n{plain_markdown(ex.prompt, targets)}"
    return [
        v4.new_raw_cell(f"# BEGIN QUESTION\nname: {ex.label}\npoints: 1\nall_or_nothing: true"),
        v4.new_markdown_cell(prompt),
        v4.new_raw_cell("# BEGIN SOLUTION"),
        v4.new_code_cell(solution, metadata={"tags": ["answer"], "exercise": ex.label}),
        v4.new_raw_cell("# END SOLUTION"),
        v4.new_raw_cell("# BEGIN TESTS"),
        *[v4.new_code_cell(t) for t in tests],
        v4.new_raw_cell("# END TESTS"),
        v4.new_raw_cell("# END QUESTION"),
        v4.new_code_cell(ex.check[0], metadata={"tags": ["check"], "exercise": ex.label}),
    ]


def master_notebook(ch: Chapter, hidden_dir: Path | None = None) -> nbformat.NotebookNode:
    """The otter-grader master notebook of chapter `ch`: setup cells, then one question per coding exercise."""
    v4 = nbformat.v4
    title = ch.targets.get(f"ch-{ch.name}", ch.name).removeprefix("the section “").removesuffix("”")
    intro = (f"# Assignment: {title}\n\nThis notebook holds the coding exercises of the chapter “{title}” of "
             "*Neural Tangent Kernels: an executable textbook*, and the setup cells they need. Run the cells in "
             "order, replace each stub by your answer, and run the check cell after it: it fails until your "
             "answer is right. Your submission is graded by the check and by further tests.")
    config = dict(ASSIGNMENT_CONFIG, name=ch.name)
    cells = [v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config, sort_keys=False)),
             v4.new_markdown_cell(intro), v4.new_markdown_cell(macros_cell(ROOT / "_config.yml"))]
    cells += [v4.new_code_cell(src, metadata={"tags": ["setup"]}) for src in ch.setup]
    targets = {**doc_titles(ROOT / "book"), **ch.targets}
    for ex in ch.coding:
        cells += question_cells(ex, targets, hidden_dir)
    return v4.new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC})


def build(ch: Chapter, out: Path, hidden_dir: Path | None = None) -> Path:
    """Write the student notebook, the instructor notebook and autograder.zip of `ch` under `out/<chapter>`."""
    from otter.assign import main as otter_assign

    if ch.problems:
        raise ValueError(f"{ch.path.name} breaks the assignment convention: {ch.problems}")
    target = out / ch.name
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"assign-{ch.name}-") as tmp:
        master = Path(tmp) / f"{ch.name}.ipynb"
        nbformat.write(master_notebook(ch, hidden_dir), master)
        otter_assign(str(master), str(Path(tmp) / "dist"), no_pdfs=True, no_run_tests=True)
        dist = Path(tmp) / "dist"
        (target / "student").mkdir(parents=True)
        (target / "instructor").mkdir()
        shutil.copy(dist / "student" / master.name, target / "student" / master.name)
        shutil.copy(dist / "autograder" / master.name, target / "instructor" / master.name)
        (zip_file,) = (dist / "autograder").glob("*.zip")
        shutil.copy(zip_file, target / "autograder.zip")
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m assignments.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: every chapter with exercises)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT.relative_to(ROOT)})")
    parser.add_argument("--hidden", type=Path, default=None,
                        help="folder of private hidden tests, <exercise-label>.py each (see the instructor guide)")
    args = parser.parse_args(argv)
    logging.getLogger("otter").setLevel(logging.WARNING)
    available = {p.stem: p for p in chapters_mod.chapters()}
    unknown = [name for name in args.chapters if name not in available]
    if unknown:
        parser.error(f"unknown chapters {unknown}; accepted: {sorted(available)}")
    if args.hidden is not None:
        if not args.hidden.is_dir():
            parser.error(f"--hidden {args.hidden} is not a folder")
        labels = {ex.label for path in available.values() for ex in chapters_mod.read(path).coding}
        unknown = sorted(p.stem for p in args.hidden.glob("*.py") if p.stem not in labels)
        if unknown:
            parser.error(f"--hidden holds tests for exercises that do not exist: {unknown}; accepted: {sorted(labels)}")
    for name in args.chapters or list(available):
        target = build(chapters_mod.read(available[name]), args.out, args.hidden)
        print(f"{name}: {target.relative_to(args.out.parent) if target.is_relative_to(args.out.parent) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
