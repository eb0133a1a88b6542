"""A chapter's exercises, read from its MyST source, and the ways the chapter breaks the authoring convention.

The convention is stated in the package docstring and in the book's appendix "Guide for instructors". Cells are
read with jupytext, the same way the book and the nbval run read them; directives are recognised by their fences
(three or more backticks or colons), so a chapter is read exactly as Jupyter Book reads it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import yaml

from bookext import markdown

ROOT = Path(__file__).resolve().parents[1]
# Roles of code cells, given as tags. A cell carries at most one of them.
ROLES = ("setup", "answer", "solution", "check", "hidden-check")
# Pages of the book that are not chapters with exercises: the preface, the guide for instructors, the appendix on
# running at scale (a how-to around one small example), the back matter.
NOT_CHAPTERS = {"intro", "appendix_instructors", "appendix_scaling", "bibliography"}
MIN_EXERCISES, MIN_CODING = 3, 2


@dataclass
class CodingExercise:
    """One auto-graded exercise: its prompt (Markdown) and the sources of its four kinds of cells."""

    label: str
    title: str
    prompt: str = ""
    answer: list[str] = field(default_factory=list)
    solution: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)       # the roles in the order the cells appear


@dataclass
class Chapter:
    """A chapter's setup cells, its exercises (labels and titles) and its coding exercises, in order."""

    name: str
    path: Path
    setup: list[str]
    exercises: dict[str, str]                 # label -> title, every exercise (coding or not)
    coding: list[CodingExercise]
    targets: dict[str, str]                   # every label in the chapter -> how to name it in plain Markdown
    problems: list[str]                       # breaches of the cell convention (see shortfalls for counts)


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapters with exercises: every page of the table of contents except the preface and back matter."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    paths = [root / (name if name.endswith(".md") else name + ".md") for name in files]
    return [p for p in paths if p.stem not in NOT_CHAPTERS]


# The gated block each role of cell belongs in: None is outside every exercise and solution block.
_BLOCK_OF_ROLE = {"setup": None, "answer": "exercise", "solution": "solution", "check": None, "hidden-check": None}


def read(path: Path) -> Chapter:
    """Read the chapter at `path` into setup cells and exercises, and list its breaches of the convention."""
    nb = jupytext.read(path)
    reader = _Reader(Chapter(path.stem, path, [], {}, [], markdown.targets(nb.cells), []))
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            reader.directives(cell.source.splitlines())
        else:
            reader.code_cell(cell, index)
    reader.chapter.problems.extend(_breaches(reader.chapter))
    return reader.chapter


class _Reader:
    """The state of a pass over a chapter's cells: the exercise in force and the gated block the next cell is in."""

    def __init__(self, chapter: Chapter):
        self.chapter, self.current, self.block = chapter, None, None

    def directives(self, lines: list[str]) -> None:
        """Record the exercises that open in the Markdown `lines`, and follow the gated blocks."""
        for name, arg, options, after in markdown.directive_blocks(lines):
            if name in ("exercise", "exercise-start"):
                if not options.get("label"):
                    self.chapter.problems.append(f"an exercise without a :label: ({arg!r})")
                    continue
                self.chapter.exercises[options["label"]] = arg
                self.current = None
                if name == "exercise-start":
                    prompt = "\n".join(_until_directive(lines[after:])).strip()
                    self.current = CodingExercise(options["label"], arg, prompt)
                    self.chapter.coding.append(self.current)
            elif name == "solution-start" and (self.current is None or arg != self.current.label):
                self.chapter.problems.append(f"solution-start {arg!r} does not follow its exercise-start")
            if name.endswith(("-start", "-end")):
                self.block = name.removesuffix("-start") if name.endswith("-start") else None

    def code_cell(self, cell, index: int) -> None:
        """File a tagged code cell under the setup or the current coding exercise, checking where it stands."""
        tags = cell.metadata.get("tags", [])
        roles = [t for t in tags if t in ROLES]
        if not roles:
            return
        role, problems = roles[0], self.chapter.problems
        if len(roles) > 1:
            problems.append(f"cell {index} carries several roles {roles}; give it one")
        if role == "hidden-check" and "remove-cell" not in tags:
            problems.append(f"cell {index} is a hidden check without the tag 'remove-cell': the book would show it")
        if self.block != _BLOCK_OF_ROLE[role]:
            where = f"inside the {self.block} block" if self.block else "outside the gated blocks"
            problems.append(f"the {role!r} cell {index} stands {where}")
        if role == "setup":
            self.chapter.setup.append(cell.source)
        elif self.current is None:
            problems.append(f"a cell tagged {role!r} (cell {index}) outside a coding exercise")
        else:
            getattr(self.current, {"hidden-check": "hidden"}.get(role, role)).append(cell.source)
            self.current.order.append(role)


def _until_directive(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if markdown.DIRECTIVE.match(line):
            break
        out.append(line)
    return out


def _breaches(chapter: Chapter) -> list[str]:
    """The mechanical parts of the convention: the four kinds of cells in order, stubs that hold no code."""
    problems = []
    if chapter.coding and not chapter.setup:
        problems.append("no cell tagged 'setup': the assignment would have no imports")
    for ex in chapter.coding:
        expected = ["answer", "solution", "check"]
        if ex.order[:3] != expected or any(role != "hidden-check" for role in ex.order[3:]) or not ex.hidden:
            problems.append(f"{ex.label}: cells {ex.order}; expected one each of {expected}, in that order, "
                            "then at least one 'hidden-check'")
        if not ex.prompt:
            problems.append(f"{ex.label}: no prompt text between exercise-start and the answer cell")
        for source in ex.answer:
            if (why := stub_problem(source)) is not None:
                problems.append(f"{ex.label}: the answer cell is not a stub: {why}")
    return problems


def shortfalls(chapter: Chapter) -> list[str]:
    """What the chapter lacks of the required numbers of exercises and of coding exercises."""
    out = []
    if len(chapter.exercises) < MIN_EXERCISES:
        out.append(f"{len(chapter.exercises)} exercises; a chapter has at least {MIN_EXERCISES}")
    if len(chapter.coding) < MIN_CODING:
        out.append(f"{len(chapter.coding)} coding exercises; a chapter has at least {MIN_CODING}")
    return out


def stub_problem(source: str) -> str | None:
    """None when `source` is a stub: imports, and functions or assignments whose bodies hold no answer.

    A function body may hold a docstring and then only ``...``, ``pass`` or ``raise NotImplementedError(...)``;
    an assignment's value must be ``...``. Anything else is named in the returned message.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return f"it does not parse ({err.msg})"
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if _is_docstring(node.body[0]) else node.body
            if body and all(_is_placeholder(stmt) for stmt in body):
                continue
            return f"the body of {node.name}() holds code"
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_ellipsis(node.value):
            continue
        return f"line {node.lineno} holds code ({ast.unparse(node)[:60]!r})"
    return None


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_ellipsis(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is Ellipsis


def _is_placeholder(stmt) -> bool:
    if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and _is_ellipsis(stmt.value)):
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False
