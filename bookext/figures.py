"""Alt text for the book's figures, taken from their captions.

A chapter's figures are the outputs of code cells, saved under a hash file name; without an ``alt`` option the
HTML writer uses that file name as the image's alt text, which tells a screen reader nothing. This transform gives
every image inside a captioned figure the caption's text as its alt text, unless the author wrote one.

It also marks wide images (more than :data:`WIDE` times as wide as high: the two- and three-panel figures) with
the class ``wide-figure``. On a phone the book's ``_static/figures.css`` keeps such a figure at a legible minimum
width and lets it scroll sideways, instead of shrinking its axis labels to a few pixels.
"""
from __future__ import annotations

import struct
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform


def caption_text(figure: nodes.figure) -> str:
    """The plain text of ``figure``'s caption (formulas as their LaTeX source), or "" without a caption."""
    captions = list(figure.findall(nodes.caption))
    return " ".join(captions[0].astext().split()) if captions else ""


WIDE = 2.0  # width / height above which a figure is "wide"


def png_aspect(path: Path) -> float | None:
    """Width / height of the PNG file at ``path``, or None when it is not a readable PNG."""
    try:
        with open(path, "rb") as f:
            header = f.read(24)                   # the signature and the IHDR chunk's width and height
    except OSError:
        return None
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", header[16:24])
    return width / height if height else None


def has_own_alt(image: nodes.image) -> bool:
    """True when the author gave ``image`` an alt text (not merely its file name)."""
    alt = image.get("alt", "").strip()
    return bool(alt) and alt != image.get("uri", "") and not image.get("uri", "").endswith(alt)


class CaptionAltText(SphinxPostTransform):
    """Give every image in a captioned figure the caption as alt text; mark wide images."""

    default_priority = 200

    def run(self, **kwargs) -> None:
        for figure in self.document.findall(nodes.figure):
            text = caption_text(figure)
            if not text:
                continue
            for image in figure.findall(nodes.image):
                if not has_own_alt(image):
                    image["alt"] = text
                aspect = png_aspect(Path(self.env.srcdir) / image.get("uri", ""))
                if aspect is not None and aspect > WIDE:
                    image["classes"].append("wide-figure")


def setup(app: Sphinx) -> dict:
    app.add_post_transform(CaptionAltText)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
