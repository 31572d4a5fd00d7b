"""Browser smoke test of the built website, offline.

    python tests/browser/smoke.py _build/html

Serves the site on 127.0.0.1 and checks both books, English at / and Chinese at /zh/, in headless
Chromium (Debian's `chromium`, driven by Playwright) with every request to another host refused: the
math was typeset by the site's own MathJax, the widgets' initial state rendered, the Colab links point
at the notebooks in the page's language, the language switch lands on the same page, the search finds a
chapter from a query in the page's language, the Chinese pages' prose is Chinese (measured), and the
console shows no errors; every chapter page of both also at phone width. Screenshots go to artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
# Offline: every host but 127.0.0.1 fails to resolve. (Routing requests through Playwright would also cut the
# network off, but it disables the HTTP cache: every page then parses the site's ~7 MB of scripts afresh.)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
FAILURES: list[str] = []
PAGES_AT_ONCE = 3  # chapter pages loading side by side


def expect(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILURES.append(what)


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def end_headers(self):          # the site does not change during the test: pages share cached scripts
            self.send_header("Cache-Control", "max-age=3600")
            super().end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def open_page(browser, url: str, wait_until: str = "load"):
    """A page of the shared browser context (the network cut off beyond 127.0.0.1 by FLAGS), recording every
    request that tried to leave 127.0.0.1, console errors and failed loads."""
    page = browser.new_page()
    log = {"errors": [], "external": [], "failed": []}

    def request(r):
        if not r.url.startswith(("data:", "blob:")) and urlparse(r.url).hostname != "127.0.0.1":
            log["external"].append(r.url)

    page.on("request", request)
    page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("requestfailed", lambda r: log["failed"].append(r.url))
    page.on("response", lambda r: log["failed"].append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until=wait_until)
    return page, log


def wait_for_mathjax(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
    page.evaluate("() => MathJax.startup.promise")


def check_console(log, name: str) -> None:
    expect(not log["external"], f"{name}: no request left 127.0.0.1 {log['external'][:3]}")
    expect(not log["failed"], f"{name}: every resource loaded {log['failed'][:3]}")
    expect(not log["errors"], f"{name}: no console errors {log['errors'][:3]}")


def chapter_pages() -> list[str]:
    """Every chapter of _toc.yml, as 'part/topic'."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [c["file"].removeprefix("chapters/") for part in toc["parts"] for c in part["chapters"]
            if c["file"].startswith("chapters/")]


# What each book shows in its own language.
BOOKS = {
    "en": {"path": "", "toggle": "Show solution", "colab": "", "search": ("rotary position", "positions/rope")},
    "zh": {"path": "/zh", "toggle": "显示参考答案", "colab": "zh/", "search": ("旋转位置编码", "positions/rope")},
}
# The share of Chinese characters among the letters of a page's prose (paragraphs and list items, code and
# math left out): a Chinese page must be written in Chinese, not carry a Chinese title over English text.
PROSE = """() => {
  const parts = [...document.querySelectorAll('article.bd-article p, article.bd-article li')]
    .filter(e => !e.closest('pre, .cell_output, .output, mjx-container, table'))
    .map(e => { const c = e.cloneNode(true); c.querySelectorAll('code, mjx-container, .math').forEach(x => x.remove());
                return c.textContent; });
  const text = parts.join(' ');
  const cjk = (text.match(/[\u4e00-\u9fff]/g) || []).length;
  const latin = (text.match(/[A-Za-z]/g) || []).length;
  return {cjk, latin};
}"""
MIN_CJK_SHARE = 0.5        # Chinese characters over Chinese characters + Latin letters; English pages: about 0


def open_chapter(browser, base: str, chapter: str, lang: str):
    """Start loading a chapter page (check_chapter waits for it): a few load side by side, since most of
    a page's time is spent waiting on its MathJax and widgets rather than computing."""
    return (chapter, lang), *open_page(browser, f"{base}{BOOKS[lang]['path']}/chapters/{chapter}.html",
                                       wait_until="commit")


PHONE = {"width": 390, "height": 844}
PHONE_SHOT = "scale/training_memory"       # a page with a wide widget (the memory calculator) and tables
# Horizontal overflow of the page itself, and the elements that cause it: the outermost ones past the right
# edge that no scrolling box of their own clips (a display equation scrolling inside its box is fine).
OVERFLOW = """() => {
  const w = window.innerWidth;
  const clipped = e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
    const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  const culprits = [...document.querySelectorAll('article.bd-article *')]
    .filter(e => e.getBoundingClientRect().right > w + 1 && !clipped(e))
    .filter(e => !e.parentElement || e.parentElement.getBoundingClientRect().right <= w + 1)
    .slice(0, 3).map(e => e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className ?
      '.' + e.className.split(' ')[0] : '') + ' ' + (e.textContent || '').trim().slice(0, 40));
  return {overflow: document.documentElement.scrollWidth > w + 1, width: document.documentElement.scrollWidth,
          culprits};
}"""


def check_chapter(opened) -> None:
    """Every chapter page: math typeset, every widget rendered, Colab links, figures, a clean console; no
    solution marker, every solution collapsed behind its toggle; the language switch pointing at the same
    chapter in the other book; the prose in the page's language (measured); and at phone width (390 px)
    nothing makes the page scroll sideways."""
    (chapter, lang), page, log = opened
    book = BOOKS[lang]
    page.wait_for_load_state("load")
    wait_for_mathjax(page)
    views = page.locator("script[type='application/vnd.jupyter.widget-view+json']").count()
    if views:
        page.wait_for_function("() => document.querySelectorAll('.jupyter-widgets.widget-container, "
                               ".jupyter-widgets.widget-inline-hbox, .widget-html, .widget-output').length >= 1",
                               timeout=20000)
    pending = page.evaluate("() => document.querySelectorAll('mjx-merror, .MathJax_Error').length")
    typeset = page.locator("mjx-container").count()
    links = page.locator("a.colab-exercises, a.colab-solutions").count()
    broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
    ok = typeset > 0 and pending == 0 and links == 2 and broken == 0 and not (log["external"] or log["failed"]
                                                                                or log["errors"])
    chapter = f"{lang}/{chapter}"
    expect(ok, f"{chapter}: {typeset} formulas, {pending} math errors, {views} widget views, {links} Colab links, "
               f"{broken} broken images, console {log['errors'][:2]}, failed loads {log['failed'][:2]}, "
               f"external {log['external'][:2]}")
    html = page.content()
    toggles = page.locator("details.hide.above-input summary", has_text=book["toggle"]).count()
    markers = sum(html.count(m) for m in ("# BEGIN SOLUTION", "# END SOLUTION"))
    expect(markers == 0 and toggles >= 1,
           f"{chapter}: no solution marker on the page ({markers}), solutions behind '{book['toggle']}' ({toggles})")
    colab = page.get_attribute("a.colab-exercises", "href") or ""
    name = chapter.split("/", 1)[1]
    expect(colab.endswith(f"/{book['colab']}exercises/{name}.ipynb"),
           f"{chapter}: the Colab link opens the exercise notebook in the page's language ({colab})")
    other = "zh" if lang == "en" else "en"
    switch = page.evaluate("() => { const a = document.querySelector('p.language-switch a'); return a && a.href; }")
    expect(bool(switch) and switch.endswith(f"{BOOKS[other]['path']}/chapters/{name}.html"),
           f"{chapter}: the language switch leads to the same chapter in the other language ({switch})")
    prose = page.evaluate(PROSE)
    share = prose["cjk"] / max(1, prose["cjk"] + prose["latin"])
    if lang == "zh":
        expect(prose["cjk"] >= 500 and share >= MIN_CJK_SHARE,
               f"{chapter}: the prose is Chinese ({prose['cjk']} Chinese characters, {share:.0%} of its letters)")
    else:
        expect(share < 0.05, f"{chapter}: the prose is English ({share:.1%} Chinese characters)")
    expect(all(d.get_attribute("open") is None for d in page.locator("details.hide.above-input").all()),
           f"{chapter}: every solution starts collapsed")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)            # the theme and the widgets lay out again
    wide = page.evaluate(OVERFLOW)
    expect(not wide["overflow"], f"{chapter} at {PHONE['width']} px: the page does not scroll sideways "
                                 f"(page {wide['width']} px; widest {wide['culprits']})")
    if chapter == PHONE_SHOT:
        page.screenshot(path=str(ARTIFACTS / "smoke-phone.png"), full_page=False)
        print(f"  screenshot (CI artifact): {(ARTIFACTS / 'smoke-phone.png').relative_to(ROOT)}")
    page.close()


def check_offline(browser, base: str) -> None:
    """The test itself: a request to another host is seen and fails, so a page that needs one would fail."""
    page, log = open_page(browser, f"{base}/intro.html")
    reached = page.evaluate("() => fetch('https://cdn.jsdelivr.net/npm/mathjax@3').then(() => true, () => false)")
    expect(not reached and bool(log["external"]), f"offline: a request to another host fails and is recorded "
                                                   f"({log['external'][:1]})")
    page.close()


def check_front_pages(browser, base: str, lang: str) -> None:
    """The intro, the glossary, the search and the softmax chapter of one book, in detail."""
    book = BOOKS[lang]
    root = f"{base}{book['path']}"
    print(f"[{lang}] intro: {root}/intro.html")
    page, log = open_page(browser, f"{root}/intro.html")
    wait_for_mathjax(page)
    links = page.eval_on_selector_all("table a[href*='chapters/']", "els => els.map(e => e.href)")
    expect(any(link.endswith(f"{book['path']}/chapters/foundations/softmax.html") for link in links),
           f"{lang}/intro: the chapter map links the softmax chapter ({len(links)} chapter links)")
    shot = ARTIFACTS / f"smoke-intro-{lang}.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"  screenshot (CI artifact): {shot.relative_to(ROOT)}")
    icon = page.evaluate("() => { const l = document.querySelector(\"link[rel='icon']\"); "
                         "return l ? fetch(l.href).then(r => r.status) : null; }")
    expect(icon == 200, f"{lang}/intro: the page names its icon and it loads ({icon}): no /favicon.ico 404")
    check_console(log, f"{lang}/intro")
    page.close()

    page, log = open_page(browser, f"{root}/glossary.html")
    rows = page.locator("article table tbody tr").count()
    expect(rows >= 100, f"{lang}/glossary: the English-Chinese glossary lists {rows} terms")
    check_console(log, f"{lang}/glossary")
    page.close()

    query, target = book["search"]
    page, log = open_page(browser, f"{root}/search.html?q={query}")
    try:
        page.wait_for_selector("#search-results ul.search li", timeout=20000)
    except Exception:  # noqa: BLE001 - reported below as no result
        pass
    hits = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(e => e.href)")
    expect(any(f"chapters/{target}.html" in h for h in hits[:5]),
           f"{lang}/search: the query {query!r} finds chapters/{target} among the first results ({hits[:3]})")
    check_console(log, f"{lang}/search")
    page.close()

    url = f"{root}/chapters/foundations/softmax.html"
    print(f"[{lang}] softmax: {url}")
    page, log = open_page(browser, url)
    wait_for_mathjax(page)
    typeset = page.locator("mjx-container").count()
    expect(typeset >= 10, f"{lang}/softmax: math typeset by the site's MathJax ({typeset} formulas)")
    raw = page.evaluate("() => document.querySelector('main').innerText.includes('\\\\frac')")
    expect(not raw, f"{lang}/softmax: no raw LaTeX left in the text")
    tagged = page.locator("mjx-container[display='true']").count()
    expect(tagged >= 5, f"{lang}/softmax: display equations rendered ({tagged})")
    page.wait_for_selector(".widget-slider", timeout=20000)
    expect(page.locator(".widget-slider").count() >= 1, f"{lang}/softmax: the temperature slider is rendered")
    bars = page.locator(".temperature-bars").count()
    expect(bars >= 1, f"{lang}/softmax: the widget's initial bar chart is rendered")
    exercise = page.get_attribute("a.colab-exercises", "href") or ""
    solution = page.get_attribute("a.colab-solutions", "href") or ""
    expect(exercise.startswith("https://colab.research.google.com/github/")
           and exercise.endswith(f"/{book['colab']}exercises/foundations/softmax.ipynb"),
           f"{lang}/softmax: Colab link to the exercise notebook ({exercise})")
    expect(solution.endswith(f"/{book['colab']}solutions/foundations/softmax.ipynb"),
           f"{lang}/softmax: Colab link to the solution notebook ({solution})")
    launch = page.locator(f"a[href*='colab.research.google.com'][href*='/{book['colab']}chapters/foundations/softmax']")
    expect(launch.count() >= 1, f"{lang}/softmax: the book's Colab launch button opens the chapter in its language")
    images = page.evaluate("() => [...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    expect(images >= 1, f"{lang}/softmax: the static figure is displayed ({images} images)")
    page.locator(".widget-slider").first.scroll_into_view_if_needed()
    shot = ARTIFACTS / f"smoke-softmax-{lang}.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"  screenshot (CI artifact): {shot.relative_to(ROOT)}")
    page.goto(url, wait_until="load")
    page.screenshot(path=str(ARTIFACTS / f"smoke-softmax-top-{lang}.png"), full_page=False)
    switch = page.locator("p.language-switch a")
    if switch.count():
        switch.first.click()
        page.wait_for_load_state("load")
        other = "zh" if lang == "en" else "en"
        expect(page.url.endswith(f"{BOOKS[other]['path']}/chapters/foundations/softmax.html"),
               f"{lang}/softmax: following the language switch opens the same chapter in the other book ({page.url})")
    else:
        expect(False, f"{lang}/softmax: the page has a language switch")
    check_console(log, f"{lang}/softmax")
    page.close()


def main(site: str) -> int:
    site_dir = Path(site).resolve()
    if not (site_dir / "intro.html").exists():
        print(f"no built site at {site_dir}: run `make build` first")
        return 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian's chromium is not installed (make smoke installs it)")
        return 2
    ARTIFACTS.mkdir(exist_ok=True)
    server, base = serve(site_dir)
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=chromium, args=FLAGS)
            browser = chromium.new_context(viewport={"width": 1280, "height": 1600})   # one HTTP cache for all pages

            check_offline(browser, base)
            for lang in BOOKS:
                check_front_pages(browser, base, lang)
            pending = []
            for lang in BOOKS:
                for chapter in chapter_pages():
                    pending.append(open_chapter(browser, base, chapter, lang))
                    if len(pending) == PAGES_AT_ONCE:
                        check_chapter(pending.pop(0))
            for opened in pending:
                check_chapter(opened)
            chromium.close()
    finally:
        server.shutdown()
    if FAILURES:
        print(f"browser smoke test: {len(FAILURES)} failed")
        return 1
    print("browser smoke test: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
