"""MyST Markdown rewritten as plain Markdown, for notebooks read outside the book (Jupyter, Colab, otter).

One conversion serves the chapter notebooks that the book offers for download (:mod:`bookext.notebooks`) and the
course assignments (:mod:`assignments.build`). Roles become text: cross-references by what they name, equations by
number, citations by author and year. Directives become ordinary Markdown: a theorem, an exercise or a solution
opens with its title in bold, an admonition is a quotation, ``{include}`` is inlined and ``{footbibliography}``
lists the works cited. How each label reads is given by :func:`targets` (one chapter) and :func:`doc_titles`.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*?)\s*$")
OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")
TARGET = re.compile(r"^\((?P<label>[\w:.-]+)\)=\s*$")
HEADING = re.compile(r"^#+\s+(?P<title>.+?)\s*$")
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<body>[^`]*)`")
_LABELLED_EQUATION_END = re.compile(r"^\$\$\s*\((?P<label>[\w:.-]+)\)\s*$")
_PROOF_KINDS = ("theorem", "lemma", "proposition", "corollary", "definition", "remark", "example", "conjecture")


def directive_blocks(lines: list[str]):
    """Yield (name, argument, options, index after the header) for every directive opening among `lines`."""
    for i, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if not match:
            continue
        options, j = {}, i + 1
        while j < len(lines) and (opt := OPTION.match(lines[j])):
            options[opt["key"]] = opt["value"]
            j += 1
        if j < len(lines) and lines[j].strip() == match["fence"]:      # a gated header closes on its own line
            j += 1
        yield match["name"], match["arg"], options, j


def doc_titles(book: Path) -> dict[str, str]:
    """How a {doc} reference to each page in the folder `book` reads: 'the chapter “Title”'."""
    titles = {}
    for path in sorted(book.glob("*.md")):
        heading = next((m["title"] for line in path.read_text().splitlines() if (m := HEADING.match(line))), None)
        if heading:
            titles[path.stem] = f"the chapter “{heading}”"
    return titles


def targets(cells) -> dict[str, str]:
    """How each label of a chapter's cells reads in plain Markdown: 'Lemma (title)', 'Figure 2'.

    Figures (code cells with a ``mystnb.figure`` name) are numbered in page order.
    """
    found, pending = {}, None
    for cell in cells:
        if name := figure(cell).get("name"):
            found[name] = f"Figure {sum(n.startswith('Figure ') for n in found.values()) + 1}"
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for line in lines:
            if target := TARGET.match(line):
                pending = target["label"]
            elif pending and (heading := HEADING.match(line)):
                found[pending], pending = f"the section “{heading['title']}”", None
        for name, arg, options, _ in directive_blocks(lines):
            kind = name.split(":")[-1].removesuffix("-start")
            if "label" in options:
                title = f" ({arg})" if arg else ""
                named = f"the exercise “{arg}”" if kind == "exercise" else f"{kind.capitalize()}{title}"
                found[options["label"]] = named
    return found


def figure(cell) -> dict:
    """The figure options (``name``, ``caption``) of a code cell whose output is a numbered figure; {} otherwise."""
    return cell.metadata.get("mystnb", {}).get("figure", {}) if cell.cell_type == "code" else {}


def equation_numbers(cells) -> dict[str, str]:
    """The number of each labelled display equation (``$$ … $$ (label)``) of a page, '(1)', '(2)', … in order."""
    labels = [m["label"] for cell in cells if cell.cell_type == "markdown"
              for line in cell.source.splitlines() if (m := _LABELLED_EQUATION_END.match(line))]
    return {label: f"({i})" for i, label in enumerate(labels, 1)}


def references(bibfile: Path) -> dict[str, tuple[str, str, str]]:
    """Each entry of `bibfile` as (authors as cited, year, full reference in Markdown), by key."""
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    data = parse_file(str(bibfile))
    style = find_plugin("pybtex.style.formatting", "plain")()
    out = {}
    for entry in style.format_entries(data.entries.values()):
        people = data.entries[entry.key].persons.get("author", [])
        last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
        cited = last[0] + " et al." if len(last) > 2 else " and ".join(last)
        year = data.entries[entry.key].fields.get("year", "")
        out[entry.key] = (cited, year, entry.text.render_as("markdown"))
    return out


def plain_markdown(text: str, targets: dict[str, str], cites: dict | None = None) -> str:
    """MyST roles rewritten as text: references by what they name, equations by number, citations by author-year.

    `targets` maps labels (and page names, equation labels) to their text; `cites` is :func:`references`, and
    without it a citation reads as its key in brackets. Other roles become their text.
    """
    def rewrite(match: re.Match) -> str:
        role, body = match["role"], match["body"]
        explicit = re.fullmatch(r"(?P<text>.*?)\s*<(?P<label>[^>]+)>", body)
        if role in ("ref", "prf:ref", "numref", "doc"):
            name = explicit["text"] if explicit else targets.get(body, f"“{body}” in the book")
            starts_sentence = re.search(r"(^|[.!?]\s+)$", text[:match.start()]) is not None
            return name[0].upper() + name[1:] if starts_sentence else name
        if role == "eq":
            return targets.get(body, f"({body} in the chapter)")
        if role.startswith(("cite", "footcite")):
            return _citation(role, [k.strip() for k in body.split(",")], cites)
        if role == "math":
            return f"${body}$"
        return body
    return _ROLE.sub(rewrite, text)


def _citation(role: str, keys: list[str], cites: dict | None) -> str:
    if cites is None or any(k not in cites for k in keys):
        return f"[{', '.join(keys)}]"
    if role.endswith(":t"):
        return "; ".join(f"{cites[k][0]} ({cites[k][1]})" for k in keys)
    return "(" + "; ".join(f"{cites[k][0]}, {cites[k][1]}" for k in keys) + ")"


def cited_keys(text: str) -> list[str]:
    """The keys cited in `text`, in order of first citation."""
    keys = [k.strip() for m in _ROLE.finditer(text) if m["role"].startswith(("cite", "footcite"))
            for k in m["body"].split(",")]
    return list(dict.fromkeys(keys))


def plain_page(text: str, targets: dict[str, str], cites: dict | None = None, include_dir: Path | None = None,
               cited: list[str] = ()) -> str:
    """A MyST Markdown cell as plain Markdown: directives rendered (see the module docstring), then the roles.

    `include_dir` is the folder that ``{include}`` paths are relative to; `cited` are the keys that a
    ``{footbibliography}`` lists.
    """
    lines = _render(text.splitlines(), targets, cites, include_dir, cited)
    return re.sub(r"\n{3,}", "\n\n", plain_markdown("\n".join(lines), targets, cites)).strip()


def _render(lines: list[str], targets, cites, include_dir, cited) -> list[str]:
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if TARGET.match(line) or line.startswith("% "):
            i += 1
            continue
        if eq := _LABELLED_EQUATION_END.match(line):              # Jupyter numbers no equation: \tag it
            number = targets.get(eq["label"], "").strip("()")
            out += [rf"\tag{{{number}}}", "$$"] if number else ["$$"]
            i += 1
            continue
        match = DIRECTIVE.match(line)
        if not match:
            out.append(line)
            i += 1
            continue
        name, arg, options, start = next(directive_blocks([line, *lines[i + 1:]]))
        start += i
        gated = start > i + 1 and lines[start - 1].strip() == match["fence"]
        end = start if gated else _closing(lines, start, match["fence"])
        body = _render(lines[start:end], targets, cites, include_dir, cited)
        out += _directive(name, arg, options, body, targets, cites, include_dir, cited)
        i = end if gated else end + 1
    return out


def _closing(lines: list[str], start: int, fence: str) -> int:
    """The index of the line closing a directive opened with `fence` whose content starts at `start`."""
    depth = 0
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        if (m := DIRECTIVE.match(lines[j])) and m["fence"] == fence:
            depth += 1
        elif stripped == fence:
            if depth == 0:
                return j
            depth -= 1
    return len(lines)


def _directive(name, arg, options, body, targets, cites, include_dir, cited) -> list[str]:
    """The Markdown lines of one directive, its `body` already rendered."""
    kind = name.split(":")[-1]
    title = plain_markdown(arg, targets, cites)
    if name == "include":
        source = (include_dir / arg).read_text() if include_dir else ""
        return _render(source.splitlines(), targets, cites, include_dir, cited)
    if name in ("footbibliography", "bibliography"):
        return [f"- {cites[k][2]}" for k in cited if cites and k in cites]
    if kind in ("exercise-end", "solution-end"):
        return []
    if kind in ("exercise", "exercise-start"):
        return [f"**Exercise ({title}).**" if title else "**Exercise.**", "", *body]
    if kind in ("solution", "solution-start"):
        return [f"**Solution** of {targets.get(arg, 'the exercise')}.", "", *body]
    if kind == "proof":
        return ["*Proof.*", "", *body, "", "∎"]
    if kind in _PROOF_KINDS:
        return [f"**{kind.capitalize()}" + (f" ({title})" if title else "") + ".**", "", *body]
    if name in ("admonition", "note", "tip", "warning", "important", "caution", "seealso"):
        heading = title or name.capitalize()
        return [f"> **{heading}**", ">", *[f"> {line}".rstrip() for line in body]]
    return [f"**{title}**" if title else "", *body]


def macros_cell(config: Path) -> str:
    """A Markdown cell defining the book's LaTeX macros (from `config`), so that formulas render in Jupyter."""
    macros = yaml.safe_load(config.read_text())["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    lines = []
    for name, body in macros.items():
        if isinstance(body, list):
            lines.append(rf"\newcommand{{\{name}}}[{body[1]}]{{{body[0]}}}")
        else:
            lines.append(rf"\newcommand{{\{name}}}{{{body}}}")
    return "$$\n" + "\n".join(lines) + "\n$$"
