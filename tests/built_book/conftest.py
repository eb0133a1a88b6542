"""Fixtures for the tests of the built book: they run after the strict build (``make test-built``), not in ``make test-lib``.

The book is read from ``_build/html``, or from the folder named by the environment variable ``BOOK_HTML`` (a build
made with ``jupyter-book build . --path-output DIR`` is in ``DIR/_build/html``). The browser fixtures serve that
folder on 127.0.0.1 and drive Debian's chromium (``/usr/bin/chromium``, installed by ``make``) with Playwright;
every request that does not go to that server is blocked and recorded.
"""
from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def html_folder() -> Path:
    """Where the built HTML book is: ``$BOOK_HTML``, else ``_build/html``."""
    return Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))


def built_pages() -> list[str]:
    """Pages of the built book (paths relative to its folder), without the redirecting ``index.html``."""
    html = html_folder()
    pages = [p for p in html.rglob("*.html") if not any(part.startswith("_") for part in p.relative_to(html).parts)]
    return sorted(str(p.relative_to(html)) for p in pages if 'http-equiv="Refresh"' not in p.read_text()[:2000])


def pytest_generate_tests(metafunc):
    """A test that takes ``built_page`` runs once per page of the built book."""
    if "built_page" in metafunc.fixturenames:
        metafunc.parametrize("built_page", built_pages())


@pytest.fixture(scope="session")
def book_html() -> Path:
    """The built HTML book; fails (does not skip) when there is none, so a missing build cannot pass."""
    html = html_folder()
    if not (html / "index.html").is_file():
        pytest.fail(f"no built book in {html}: run `make test-build` (or set BOOK_HTML) first")
    return html


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the base class
        pass


@pytest.fixture(scope="session")
def site_url(book_html):
    """Base URL (ending in ``/``) of a 127.0.0.1 server of `book_html`, for the session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(book_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (which never downloads a browser of its own here)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
