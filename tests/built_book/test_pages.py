"""The built HTML book: the noisy-labels results table and the figures' alt text.

Runs on the output of the strict build (the fixture ``book_html``); it reads the HTML only, no browser.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

HASH_NAME = re.compile(r"^[0-9a-f]{16,}\.(png|svg|jpg)$")


class Elements(HTMLParser):
    """Collects the images (their attributes) and the cells of every table (text of each th/td; td alone too)."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "cells": [], "values": []})
        elif tag in ("td", "th") and self.tables:
            self._cell, self._tag = [], tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            self.tables[-1]["cells"].append(text)
            if self._tag == "td":
                self.tables[-1]["values"].append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(page: Path) -> Elements:
    parser = Elements()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_noisy_labels_table_is_a_styled_table(book_html):
    """One number per cell, in a pandas table, with the accuracies the chapter reports (percent, one decimal)."""
    tables = parse(book_html / "book" / "noisy_labels.html").tables
    results = [t for t in tables if any("Kernel ridge" in c for c in t["cells"])]
    assert len(results) == 1, "the results table (with its kernel ridge row) should appear once"
    table = results[0]
    assert "dataframe" in table["class"], "render the table as a DataFrame, styled by the book"
    numbers = [c for c in table["values"] if re.fullmatch(r"\d+\.\d", c)]
    # 8 rows (CE and MSE early and final, CE+AUX, MSE+AUX, MSE+RDI, kernel ridge) at 4 noise levels
    assert len(numbers) == len(table["values"]) == 8 * 4, f"expected 32 accuracies, one per cell: {table['cells']}"
    assert all(0 <= float(n) <= 100 for n in numbers)


def test_every_figure_has_alt_text_from_its_caption(book_html):
    missing = []
    for page in sorted((book_html / "book").glob("*.html")):
        for image in parse(page).images:
            alt = image.get("alt", "")
            if "_images/" in image.get("src", "") and (not alt.strip() or HASH_NAME.match(alt)):
                missing.append(f"{page.name}: {image.get('src')}")
    assert not missing, f"images whose alt text is empty or a file name: {missing}"
