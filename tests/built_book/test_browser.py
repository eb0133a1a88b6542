"""Every page of the built book in headless chromium, at desktop (1400x900) and phone (390x844) sizes, offline.

Each page is loaded from a 127.0.0.1 server, with every other request blocked; the visit records what the tests
below assert, and a screenshot of the window at each size goes to ``_build/screenshots/<page>-<size>.png`` (next
to the ``html`` folder tested) for a person to look at.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

SIZES = {"desktop": (1400, 900), "phone": (390, 844)}
SEARCH_WORD = "kernel"  # in every chapter
RAW_TEX = ("\\(", "\\)", "\\[", "\\]", "$$")

# Text outside code that still holds TeX delimiters, formulas MathJax left untypeset or marked as errors
# (an undefined macro shows in red), images that did not load, visible search fields, the rendered widths of the
# multi-panel figures, and inline formulas that run past the window's right edge outside a scrolling box.
PAGE_STATE_JS = """() => {
  const inCode = n => n.parentElement && n.parentElement.closest('pre, code, script, style, noscript, textarea');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const text = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) if (!inCode(n)) text.push(n.textContent);
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const inScrollBox = el => {
    for (let e = el.parentElement; e; e = e.parentElement)
      if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return true;
    return false;
  };
  return {
    text: text.join(' '),
    formulas: document.querySelectorAll('.math').length,
    untypeset: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'))
                  .map(m => m.textContent.slice(0, 80)),
    math_errors: [...document.querySelectorAll('mjx-merror, mjx-container [style*="color: red"]')]
                  .map(e => e.textContent.slice(0, 80)),
    broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    search_fields: [...document.querySelectorAll('.search-button-field')].filter(visible).length,
    wide_figures: [...document.querySelectorAll('img.wide-figure')].map(i => i.getBoundingClientRect().width),
    clipped_formulas: [...document.querySelectorAll('mjx-container:not([display="true"])')]
                  .filter(m => m.getBoundingClientRect().right > window.innerWidth + 1 && !inScrollBox(m))
                  .map(m => (m.closest('p, li, td, dd') || m).textContent.slice(0, 80)),
    heading: document.querySelector('.bd-article h1')?.textContent.trim(),
  };
}"""


@dataclass
class Visit:
    """What one page showed at one size."""

    state: dict = field(default_factory=dict)
    console_errors: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    external_requests: list = field(default_factory=list)
    chapter_links_after_menu: int | None = None  # phone only: chapter links visible after a tap on ☰
    contents_after_toggle: int | None = None  # phone only: "on this page" links visible after a tap on ☷


def _open(browser, site_url: str, size: str, visit: Visit):
    """A new page of a fresh browser context at `size` that records errors and blocks requests off the site."""
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")

    def route(request_route):
        if request_route.request.url.startswith(site_url):
            request_route.continue_()
        else:
            visit.external_requests.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and visit.console_errors.append(msg.text))
    page.on("pageerror", lambda err: visit.console_errors.append(str(err)))
    page.on("requestfailed", lambda req: req.url.startswith(site_url) and visit.failed_requests.append(req.url))
    page.on("response", lambda resp: resp.status >= 400 and visit.failed_requests.append(f"{resp.status} {resp.url}"))
    return context, page


def _settle(page) -> None:
    """Wait until MathJax (where the page loads it) has typeset the page and the web fonts have loaded."""
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise && MathJax.startup.promise")
    page.evaluate("() => document.fonts.ready.then(() => true)")


def _visible_count(page, selector: str) -> int:
    return page.evaluate(f"() => [...document.querySelectorAll({selector!r})].filter(e => e.getClientRects().length"
                         " > 0 && getComputedStyle(e).visibility !== 'hidden').length")


def _tap_toggles(page, visit: Visit) -> None:
    """Phone: tap the visible ☰ and count the chapter links shown; then the same for ☷ and the page contents."""
    page.locator("button.primary-toggle:visible").first.click()
    page.wait_for_timeout(300)
    visit.chapter_links_after_menu = _visible_count(page, "#pst-primary-sidebar-modal[open] .bd-sidenav a")
    page.keyboard.press("Escape")
    secondary = page.locator("button.secondary-toggle:visible")
    if secondary.count():
        secondary.first.click()
        page.wait_for_timeout(300)
        visit.contents_after_toggle = _visible_count(page, "#pst-secondary-sidebar-modal[open] a")


@pytest.fixture(scope="session")
def visit(browser, site_url, book_html):
    """``visit(page, size)``: what `page` showed at `size` (a key of SIZES).

    Each page is loaded once, at the first size, then looked at and screenshot at each size in turn (the theme's
    layout follows the window width; loading each page twice would double the test's time, which is mostly MathJax
    typesetting). At phone size the visit ends by tapping ☰ and ☷.
    """
    shots = book_html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    cache = {}

    def load(path: str) -> dict:
        record = Visit()
        first, *others = SIZES
        context, page = _open(browser, site_url, first, record)
        page.goto(site_url + path, wait_until="load")
        _settle(page)
        visits = {}
        for size in (first, *others):
            width, height = SIZES[size]
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(100)
            visits[size] = Visit(record.state, record.console_errors, record.failed_requests, record.external_requests)
            visits[size].state = page.evaluate(PAGE_STATE_JS)
            page.screenshot(path=shots / f"{path.replace('/', '-').removesuffix('.html')}-{size}.png")
        _tap_toggles(page, visits["phone"])
        context.close()
        return visits

    def look(path: str, size: str) -> Visit:
        if path not in cache:
            cache[path] = load(path)
        return cache[path][size]

    return look


def test_every_chapter_was_built(book_html):
    from nbval_chapters import ROOT, toc_chapters

    missing = [str(p) for p in toc_chapters() if not (book_html / p.relative_to(ROOT).with_suffix(".html")).is_file()]
    assert not missing, f"pages missing from {book_html}: {missing}"


@pytest.mark.parametrize("size", SIZES)
def test_formulas_are_typeset(visit, built_page, size):
    state = visit(built_page, size).state
    assert not state["untypeset"], f"formulas left as TeX: {state['untypeset'][:5]}"
    assert not state["math_errors"], f"formulas with errors or undefined macros: {state['math_errors'][:5]}"
    raw = [d for d in RAW_TEX if d in state["text"]]
    assert not raw, f"raw TeX delimiters {raw} in the text, e.g. {_context(state['text'], raw[0])!r}"


@pytest.mark.parametrize("size", SIZES)
def test_everything_loads_from_the_site_alone(visit, built_page, size):
    record = visit(built_page, size)
    assert not record.state["broken_images"], f"images that did not load: {record.state['broken_images']}"
    assert not record.failed_requests, f"failed requests: {record.failed_requests}"
    assert not record.external_requests, f"requests leaving the site: {record.external_requests}"
    assert not record.console_errors, f"console errors: {record.console_errors}"


def test_one_search_box_on_a_desktop(visit, built_page):
    assert visit(built_page, "desktop").state["search_fields"] <= 1


def test_menu_button_opens_the_chapter_list_on_a_phone(visit, built_page):
    record = visit(built_page, "phone")
    assert record.chapter_links_after_menu and record.chapter_links_after_menu >= 7, "☰ did not open the chapters"
    if record.contents_after_toggle is not None:
        assert record.contents_after_toggle > 0, "☷ did not open the page's contents"


def test_long_formulas_scroll_instead_of_being_clipped_on_a_phone(visit, built_page):
    clipped = visit(built_page, "phone").state["clipped_formulas"]
    assert not clipped, f"{len(clipped)} inline formulas run off the screen, e.g. in {clipped[0]!r}"


def test_multi_panel_figures_stay_legible_on_a_phone(visit, built_page):
    """Wide figures keep 600 px (axis labels of about 9 px) and scroll sideways rather than shrink to 342 px."""
    widths = visit(built_page, "phone").state["wide_figures"]
    assert all(w >= 560 for w in widths), f"multi-panel figures shrunk to {widths} px"
    if built_page == "book/ndk.html":
        assert len(widths) >= 3, "the NDK chapter's multi-panel figures are not marked wide"


def test_chapters_are_numbered_as_the_text_counts_them(visit):
    """The text calls the chapter on perturbation "Chapter 2": its heading and its entry in the menu say so."""
    state = visit("book/perturbation.html", "desktop").state
    assert state["heading"].startswith("2. Perturbation at initialization"), state["heading"]
    assert "2. Perturbation at initialization" in state["text"]


@pytest.mark.parametrize("size", SIZES)
def test_search_finds_a_known_word(browser, site_url, size):
    record = Visit()
    context, page = _open(browser, site_url, size, record)
    page.goto(f"{site_url}search.html?q={SEARCH_WORD}", wait_until="load")
    page.wait_for_function("() => document.querySelector('#search-results h2')?.textContent === 'Search Results'")
    page.wait_for_load_state("networkidle")
    _settle(page)
    page.wait_for_timeout(500)  # the summaries are typeset 50 ms after the last one arrives
    results = page.locator("#search-results ul.search li").count()
    state = page.evaluate(PAGE_STATE_JS)
    context.close()
    assert results >= 5, f"search for {SEARCH_WORD!r} found {results} pages"
    assert not record.console_errors and not record.external_requests and not record.failed_requests
    raw = [d for d in RAW_TEX if d in state["text"]]
    assert not raw, f"raw TeX {raw} in the search results, e.g. {_context(state['text'], raw[0])!r}"


def _context(text: str, needle: str, width: int = 60) -> str:
    at = text.find(needle)
    return text[max(0, at - width): at + width]
