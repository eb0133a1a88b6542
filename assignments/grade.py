"""Grade a folder of submitted notebooks offline, without Docker, into one CSV row per submission.

Each submission is graded by ``otter run`` (otter-grader's non-containerized grader) against the autograder of its
chapter, which is read from the notebook's metadata (``otter.assignment_name``, written by ``make assignments``) or,
failing that, from a file name that starts with the chapter's name. Every submission runs in its own process
group under a time limit, so a submission that crashes, hangs or is not a notebook gets a row saying so and the
batch goes on. Output:

* ``grades.csv``: submission, assignment, status (``graded``, ``timeout``, ``crashed``, ``not a notebook``,
  ``unknown assignment``), score, possible, one column per exercise (its score, empty where it does not apply),
  the number of cells outside the checks that raised, the seconds grading took, and a one-line message;
* ``feedback/<submission>.txt``: every failed test's message and every cell error, to return to the student.

Usage: ``python -m assignments.grade SUBMISSIONS [--assignments DIR] [--out DIR] [--timeout S] [--jobs N]``
(``make grade SUBMISSIONS=dir``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .build import OUT as ASSIGNMENTS

FIXED_COLUMNS = ["submission", "assignment", "status", "score", "possible"]
TAIL_COLUMNS = ["errors_outside_checks", "seconds", "message"]


@dataclass
class Row:
    """The grade of one submission: a status, scores per exercise, and the feedback text."""

    submission: str
    assignment: str = ""
    status: str = "graded"
    scores: dict[str, float] = field(default_factory=dict)
    possible: dict[str, float] = field(default_factory=dict)
    errors_outside_checks: int = 0
    seconds: float = 0.0
    message: str = ""
    feedback: str = ""

    def csv_row(self, exercises: list[str]) -> dict[str, object]:
        graded = self.status == "graded"
        row = {"submission": self.submission, "assignment": self.assignment, "status": self.status,
               "score": sum(self.scores.values()) if graded else 0,
               "possible": sum(self.possible.values()) if graded else "",
               "errors_outside_checks": self.errors_outside_checks if graded else "",
               "seconds": round(self.seconds, 1), "message": self.message}
        row.update({label: self.scores.get(label, "") for label in exercises})
        return row


def assignment_of(path: Path, available: set[str]) -> tuple[str | None, str | None]:
    """(chapter, None), or (None, status) when `path` is not a readable notebook or names no known chapter."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
    except (OSError, UnicodeDecodeError, ValueError):
        return None, "not a notebook"
    name = (nb.get("metadata") or {}).get("otter", {}).get("assignment_name")
    if name in available:
        return name, None
    by_file = [a for a in available if path.stem.startswith(a)]
    return (max(by_file, key=len), None) if by_file else (None, "unknown assignment")


def grade_one(submission: Path, autograder: Path) -> dict:
    """Run otter on one submission (in this process) and summarise the result as a JSON-able dict."""
    from otter.run import main as otter_run

    results = otter_run(str(submission), autograder=str(autograder), output_dir=None, no_logo=True)
    if results.has_catastrophic_failure():
        return {"catastrophic": str(results.catastrophic_error), "exercises": {}, "cell_errors": []}
    exercises = {name: {"score": tf.score, "possible": tf.possible, "summary": tf.summary()}
                 for name, tf in results.results.items()}
    return {"exercises": exercises, "cell_errors": cell_errors(results.notebook)}


def cell_errors(nb) -> list[dict]:
    """The cells of an executed notebook that raised: index, whether it is a check cell, the error line."""
    errors = []
    for index, cell in enumerate(nb.cells if nb is not None else []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                is_check = "check" in cell.get("metadata", {}).get("tags", [])
                errors.append({"cell": index, "check": is_check, "exercise": cell.metadata.get("exercise", ""),
                               "error": f"{output.get('ename')}: {output.get('evalue')}"})
    return errors


def run_isolated(submission: Path, autograder: Path, timeout: float) -> tuple[str, dict | str]:
    """Grade in a child process group with a time limit: ('graded', result), or ('timeout'/'crashed', why)."""
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "assignments.grade", "--one", str(submission.resolve()),
               "--autograder", str(autograder.resolve()), "--result", str(result_file)]
        env = dict(os.environ, TMPDIR=tmp, MPLBACKEND="Agg",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                               os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)          # the grader and the kernel it started
            proc.communicate()
            return "timeout", f"grading took longer than {timeout:g} s and was stopped"
        if proc.returncode != 0 or not result_file.exists():
            last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
            return "crashed", f"the grader exited with status {proc.returncode}: {last[0][:300]}"
        return "graded", json.loads(result_file.read_text())


def grade_submission(path: Path, assignments: Path, available: set[str], timeout: float) -> Row:
    """One submission's row: its chapter, then otter's scores and the cell errors, or why it was not graded."""
    row = Row(path.name)
    name, status = assignment_of(path, available)
    if name is None:
        row.status = status
        row.message = ("the file is not a Jupyter notebook" if status == "not a notebook" else
                       f"no assignment matches; name the file after one of {sorted(available)}")
        row.feedback = row.message
        return row
    row.assignment = name
    start = time.perf_counter()
    row.status, result = run_isolated(path, assignments / name / "autograder.zip", timeout)
    row.seconds = time.perf_counter() - start
    if row.status != "graded":
        row.message = row.feedback = result
        return row
    if "catastrophic" in result:
        row.status, row.message = "crashed", f"otter could not grade it: {result['catastrophic'][:300]}"
        row.feedback = row.message
        return row
    return fill_scores(row, result)


def fill_scores(row: Row, result: dict) -> Row:
    """Scores per exercise, the count of cells outside the checks that raised, and the feedback text."""
    failed = []
    for label, ex in result["exercises"].items():
        row.scores[label], row.possible[label] = ex["score"], ex["possible"]
        if ex["score"] < ex["possible"]:
            failed.append(label)
    outside = [e for e in result["cell_errors"] if not e["check"]]
    row.errors_outside_checks = len(outside)
    parts = [f"failed: {', '.join(failed)}" if failed else "every exercise passed"]
    if outside:
        parts.append(f"cell {outside[0]['cell']} raised {outside[0]['error'][:200]}")
    row.message = "; ".join(parts)
    summaries = [ex["summary"] for ex in result["exercises"].values()]
    errors = [f"cell {e['cell']}{' (check of ' + e['exercise'] + ')' if e['check'] else ''}: {e['error']}"
              for e in result["cell_errors"]]
    row.feedback = "\n\n".join(summaries + (["Cells that raised:\n" + "\n".join(errors)] if errors else []))
    return row


def grade_folder(submissions: Path, assignments: Path = ASSIGNMENTS, out: Path | None = None,
                 timeout: float = 300.0, jobs: int = 2) -> list[Row]:
    """Grade every file in `submissions` (not recursing); write grades.csv and feedback/ under `out`."""
    if not submissions.is_dir():
        raise ValueError(f"submissions must be a folder of notebooks, got {submissions}")
    available = {p.parent.name for p in assignments.glob("*/autograder.zip")}
    if not available:
        raise ValueError(f"no autograder under {assignments}: run `make assignments` first")
    files = sorted(p for p in submissions.iterdir() if p.is_file() and not p.name.startswith("."))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(lambda p: grade_submission(p, assignments, available, timeout), files))
    out = out or submissions.parent / f"{submissions.name}-grades"
    write_report(rows, out)
    return rows


def write_report(rows: list[Row], out: Path) -> None:
    """grades.csv with one row per submission, and feedback/<submission>.txt for each."""
    exercises = sorted({label for row in rows for label in row.scores})
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIXED_COLUMNS + exercises + TAIL_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.csv_row(exercises))
            (out / "feedback" / f"{row.submission}.txt").write_text(row.feedback + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m assignments.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="folder of submitted notebooks")
    parser.add_argument("--assignments", type=Path, default=ASSIGNMENTS, help="output of `make assignments`")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: <submissions>-grades)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per submission")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--autograder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:                                   # the child process of run_isolated
        args.result.write_text(json.dumps(grade_one(args.submissions, args.autograder)))
        return 0
    if args.timeout <= 0 or args.jobs < 1:
        parser.error("--timeout must be positive and --jobs at least 1")
    try:
        rows = grade_folder(args.submissions, args.assignments, args.out, args.timeout, args.jobs)
    except ValueError as err:
        parser.error(str(err))
    out = args.out or args.submissions.parent / f"{args.submissions.name}-grades"
    for row in rows:
        fields = row.csv_row([])
        print(f"{row.submission}: {row.status}, {fields['score']}/{fields['possible']}  {row.message}")
    print(f"wrote {out / 'grades.csv'} and {out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
