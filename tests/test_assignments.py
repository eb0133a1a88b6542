"""Course assignments: the authoring convention in every chapter, and autograding that tells right from wrong.

One batch grades, for every chapter, the instructor notebook (full marks), the untouched student notebook (zero on
every exercise, and no cell outside the checks raises) and, for every coding exercise, the instructor notebook with
that exercise's answer replaced by the deliberately wrong one in ``tests/wrong_answers/<label>.py`` (zero on that
exercise alone). A second batch holds a broken, a hanging, a crashing and a non-notebook submission.

While writing a chapter, ``ASSIGNMENT_CHAPTERS=name1,name2`` restricts these tests to those chapters.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import nbformat
import pytest

from assignments import build, chapter, grade, student_book

WRONG = Path(__file__).resolve().parent / "wrong_answers"
CHAPTERS = {p.stem: p for p in chapter.chapters()
            if p.stem in os.environ.get("ASSIGNMENT_CHAPTERS", p.stem).split(",")}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assignments")
    for path in CHAPTERS.values():
        build.build(chapter.read(path), out)
    return out


def with_answer(nb, label: str, source: str):
    """A copy of notebook `nb` whose answer cell of exercise `label` holds `source`."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    (cell,) = [c for c in nb.cells if c.metadata.get("exercise") == label and "answer" in c.metadata.get("tags", [])]
    cell.source = source
    return nb


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory) -> dict[str, grade.Row]:
    """Every chapter's instructor, student and wrong-answer notebooks, graded in one batch."""
    subs = tmp_path_factory.mktemp("submissions")
    for name in CHAPTERS:
        instructor = nbformat.read(built / name / "instructor" / f"{name}.ipynb", 4)
        nbformat.write(instructor, subs / f"{name}-instructor.ipynb")
        nbformat.write(nbformat.read(built / name / "student" / f"{name}.ipynb", 4), subs / f"{name}-student.ipynb")
        for ex in chapter.read(CHAPTERS[name]).coding:
            wrong = (WRONG / f"{ex.label}.py").read_text()
            nbformat.write(with_answer(instructor, ex.label, wrong), subs / f"{name}-wrong-{ex.label}.ipynb")
    rows = grade.grade_folder(subs, built, subs.parent / "report", timeout=600, jobs=2)
    return {row.submission: row for row in rows}


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_follows_the_convention(name):
    ch = chapter.read(CHAPTERS[name])
    assert not ch.problems, ch.problems
    assert not chapter.shortfalls(ch), chapter.shortfalls(ch)
    missing = [ex.label for ex in ch.coding if not (WRONG / f"{ex.label}.py").exists()]
    assert not missing, f"no deliberately wrong answer in tests/wrong_answers/ for {missing}"


def test_every_wrong_answer_belongs_to_an_exercise():
    labels = {ex.label for path in chapter.chapters() for ex in chapter.read(path).coding}
    orphans = sorted(p.stem for p in WRONG.glob("*.py") if p.stem not in labels)
    assert not orphans, f"wrong answers for exercises that do not exist: {orphans}"


@pytest.mark.parametrize("source, ok", [
    ('def f(x):\n    """doc."""\n    raise NotImplementedError("your answer")', True),
    ("import math\ndef f(x):\n    ...\nresult = ...", True),
    ("def f(x):\n    return x + 1", False),
    ("def f(x):\n    ...\ny = 2", False),
    ("def f(x:\n", False),
])
def test_stub_detection(source, ok):
    assert (chapter.stub_problem(source) is None) == ok


def solution_lines(ex: chapter.CodingExercise) -> set[str]:
    """The lines of the reference solution that the stub does not share: code a student file must not contain."""
    stub = {line.strip() for line in ex.answer[0].splitlines()}
    lines = {line.strip() for line in ex.solution[0].splitlines()}
    return {line for line in lines - stub if line and not line.startswith("#") and len(line) > 3}


@pytest.mark.parametrize("name", CHAPTERS)
def test_student_files_hold_no_solution_code(built, name):
    student = built / name / "student"
    text = "\n".join(json.dumps(nbformat.read(p, 4)).encode().decode("unicode_escape")
                     for p in student.rglob("*.ipynb"))
    instructor = (built / name / "instructor" / f"{name}.ipynb").read_text()
    assert [p.name for p in student.iterdir()] == [f"{name}.ipynb"]
    for ex in chapter.read(CHAPTERS[name]).coding:
        lines = solution_lines(ex)
        assert lines, f"{ex.label}: the solution shares every line with the stub"
        assert all(json.dumps(line)[1:-1] in instructor for line in lines), "the instructor notebook lost code"
        leaked = [line for line in lines if line in text]
        assert not leaked, f"{ex.label}: the student notebook contains solution code {leaked}"
        for hidden in ex.hidden:
            assert hidden.strip() not in text, f"{ex.label}: the student notebook contains a hidden test"


@pytest.mark.parametrize("name", CHAPTERS)
def test_instructor_notebook_scores_full_marks(graded, name):
    row = graded[f"{name}-instructor.ipynb"]
    assert row.status == "graded" and row.errors_outside_checks == 0, row.feedback
    labels = [ex.label for ex in chapter.read(CHAPTERS[name]).coding]
    assert sorted(row.scores) == sorted(labels)
    assert all(row.scores[label] == row.possible[label] == 1 for label in labels), row.feedback


@pytest.mark.parametrize("name", CHAPTERS)
def test_student_notebook_scores_zero_and_fails_only_at_checks(graded, name):
    row = graded[f"{name}-student.ipynb"]
    assert row.status == "graded", row.feedback
    assert row.scores and all(score == 0 for score in row.scores.values()), row.feedback
    assert row.errors_outside_checks == 0, f"a cell outside the checks raised: {row.feedback}"
    failing_checks = set(re.findall(r"\(check of ([\w-]+)\)", row.feedback))
    assert failing_checks == set(row.scores), f"every check cell must fail on the stub: {row.feedback}"


@pytest.mark.parametrize("label", [ex.label for p in CHAPTERS.values() for ex in chapter.read(p).coding])
def test_a_wrong_answer_scores_zero_on_its_exercise_alone(graded, label):
    (row,) = [r for name, r in graded.items() if name.endswith(f"-wrong-{label}.ipynb")]
    assert row.status == "graded", row.feedback
    assert row.scores[label] == 0, f"the wrong answer to {label} passed: {row.feedback}"
    others = {other: score for other, score in row.scores.items() if other != label}
    assert all(score == 1 for score in others.values()), f"a wrong {label} cost other exercises: {row.feedback}"


def test_a_batch_of_bad_submissions_completes(built, tmp_path):
    """A hanging, a crashing, a broken and a non-notebook submission each get a row; the batch finishes."""
    name = next(iter(CHAPTERS))
    student = nbformat.read(built / name / "student" / f"{name}.ipynb", 4)
    subs = tmp_path / "subs"
    subs.mkdir()
    for suffix, source in [("hangs", "import time\ntime.sleep(10_000)"), ("crashes", "import os\nos._exit(3)")]:
        nb = nbformat.from_dict(json.loads(json.dumps(student)))
        nb.cells.insert(0, nbformat.v4.new_code_cell(source))          # at once: the time limit can be short
        nbformat.write(nb, subs / f"{name}-{suffix}.ipynb")
    (subs / f"{name}-broken.ipynb").write_text('{"cells": [')
    (subs / "essay.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    (subs / "other.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()))
    rows = {r.submission: r for r in grade.grade_folder(subs, built, tmp_path / "report", timeout=12, jobs=2)}
    status = {name: row.status for name, row in rows.items()}
    assert status == {f"{name}-hangs.ipynb": "timeout", f"{name}-crashes.ipynb": "crashed",
                      f"{name}-broken.ipynb": "not a notebook", "essay.pdf": "not a notebook",
                      "other.ipynb": "unknown assignment"}, status
    lines = (tmp_path / "report" / "grades.csv").read_text().splitlines()
    assert len(lines) == 1 + len(rows)
    assert all((tmp_path / "report" / "feedback" / f"{r}.txt").read_text().strip() for r in rows)


def test_student_edition_of_the_book_leaves_out_every_solution(tmp_path):
    """Built without executing the chapters (the same pages, no outputs): exercises present, solutions absent."""
    html = student_book.build(tmp_path / "student", execute=False)
    assert "(student edition)" in (html / "book" / "intro.html").read_text()
    for name, path in CHAPTERS.items():
        page = (html / path.relative_to(chapter.ROOT).with_suffix(".html")).read_text()
        ch = chapter.read(path)
        for label in ch.exercises:
            assert f'id="{label}"' in page, f"{name}: the exercise {label} is missing from the student edition"
        assert "solution-content" not in page and 'class="solution' not in page, f"{name}: a solution is shown"
        for ex in ch.coding:
            leaked = [line for line in solution_lines(ex) if line in html_text(page)]
            assert not leaked, f"{name}: solution code of {ex.label} on the page: {leaked}"


def html_text(page: str) -> str:
    """The text of an HTML page with the tags and entities of highlighted code undone, close enough to match lines."""
    import html as html_mod

    return html_mod.unescape(re.sub(r"<[^>]+>", "", page))


def test_the_guide_for_instructors_lists_every_exercise():
    """Its table has one row per exercise of the book, auto-graded exactly where the chapter has a coding exercise."""
    guide = (chapter.ROOT / "book" / "appendix_instructors.md").read_text()
    rows = re.findall(r"^\|[^|\n]*\|\s*`(ex-[\w-]+)`\s*\|\s*([^|\n]+?)\s*\|\s*(\d+)\s*\|[^|\n]*\S[^|\n]*\|$", guide,
                      flags=re.MULTILINE)
    listed = {label: kind for label, kind, _ in rows}
    assert len(listed) == len(rows), "an exercise is listed twice"
    book = {label: ("auto-graded" if label in {ex.label for ex in ch.coding} else "written")
            for ch in map(chapter.read, chapter.chapters()) for label in ch.exercises}
    assert listed == book, (f"missing from the guide: {sorted(set(book) - set(listed))}; not in the book: "
                            f"{sorted(set(listed) - set(book))}; kind differs: "
                            f"{sorted(k for k in set(book) & set(listed) if book[k] != listed[k])}")


BROKEN_CHAPTER = '''\
---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A chapter that breaks the convention

````{exercise-start} First (coding)
:label: ex-first
````

Write f.

```{code-cell} ipython3
:tags: [answer]
def f(x):
    return x + 1
```

````{exercise-end}
````

```{code-cell} ipython3
:tags: [solution]
def f(x):
    return x + 1
```

```{code-cell} ipython3
:tags: [check]
assert f(1) == 2
```

```{code-cell} ipython3
:tags: [hidden-check]
assert f(2) == 3
```
'''


def test_breaches_of_the_convention_are_named(tmp_path):
    """A stub with code, a solution outside its block, a visible hidden check and no setup: each one reported."""
    path = tmp_path / "broken.md"
    path.write_text(BROKEN_CHAPTER)
    problems = "\n".join(chapter.read(path).problems)
    for expected in ["'solution' cell 3 stands outside the gated blocks", "without the tag 'remove-cell'",
                     "no cell tagged 'setup'", "the answer cell is not a stub: the body of f() holds code"]:
        assert expected in problems, f"{expected!r} not in {problems}"


def test_private_hidden_tests_reach_the_autograder_only(tmp_path):
    """`--hidden DIR`: each '# %%' part of DIR/<label>.py is one more hidden test, absent from the student notebook."""
    name = next(iter(CHAPTERS))
    label = chapter.read(CHAPTERS[name]).coding[0].label
    private = tmp_path / "private"
    private.mkdir()
    (private / f"{label}.py").write_text("# %% first\nassert 'PRIVATE-ONE'\n# %% second\nassert 'PRIVATE-TWO'\n")
    assert build.main([name, "--out", str(tmp_path / "out"), "--hidden", str(private)]) == 0
    out = tmp_path / "out" / name
    with zipfile.ZipFile(out / "autograder.zip") as z:
        tests = z.read(f"tests/{label}.py").decode()
    n_public_hidden = len(chapter.read(CHAPTERS[name]).coding[0].hidden)
    assert "PRIVATE-ONE" in tests and "PRIVATE-TWO" in tests
    assert tests.count("def test_") == 1 + n_public_hidden + 2, "the check, the chapter's hidden tests, two private"
    assert "PRIVATE-ONE" not in (out / "student" / f"{name}.ipynb").read_text()
    (private / "ex-no-such-exercise.py").write_text("assert True\n")
    with pytest.raises(SystemExit):
        build.main([name, "--out", str(tmp_path / "out"), "--hidden", str(private)])
