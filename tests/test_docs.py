"""The documentation site: ``mkdocs build --strict`` passes, and the built site works in a real headless browser.

The build reuses the examples' outputs of this session (:func:`test_examples.run_examples`) for its figures. The
browser is Debian's ``chromium`` driven by Playwright's Python package (``executable_path``); the site is served
over http from 127.0.0.1 by a server this module starts (search needs http, not file://).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import yaml
from test_examples import examples_base, run_examples

ROOT = Path(__file__).resolve().parents[1]


def _mkdocs(config: Path, site: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", **(env or {})},
    )


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    base = examples_base(tmp_path_factory)
    runs = run_examples(str(base))
    failed = [name for name, run in runs.items() if run.returncode != 0]
    assert not failed, f"examples failed, the docs need their figures: {failed}"
    out = tmp_path_factory.mktemp("site")
    build = _mkdocs(ROOT / "mkdocs.yml", out, {"XCLOUDFREE_EXAMPLES_OUT": str(base)})
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
    return out


@pytest.fixture(scope="session")
def server(site: Path):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no chromium on PATH: `make test` installs Debian's package (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def _nav_pages() -> list[str]:
    """Every page of the nav in mkdocs.yml, as site paths (use_directory_urls: false)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from walk(value)
            else:
                yield value

    return [page.removesuffix(".md") + ".html" for page in walk(config["nav"])]


PAGES = _nav_pages()
#: Objects the API reference must document (a sample across the subpackages).
API_OBJECTS = (
    "xcloudfree.accessor.CloudfreeDatasetAccessor.remove",
    "xcloudfree.io.open_scene",
    "xcloudfree.masking.detect",
    "xcloudfree.models.create",
    "xcloudfree.inference.predict",
    "xcloudfree.metrics.evaluate",
    "xcloudfree.training.train",
    "xcloudfree.datasets.synthetic_scene",
)


def test_every_nav_page_was_built_and_the_api_reference_is_complete(site: Path):
    missing = [p for p in PAGES if not (site / p).is_file()]
    assert not missing, f"pages in the nav but not in the site: {missing}"
    api = (site / "api.html").read_text()
    for name in API_OBJECTS:
        assert f'id="{name}"' in api, f"the API reference lacks {name}"
    cli = (site / "cli.html").read_text()
    from xcloudfree.cli import app

    commands = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    for command in commands:
        assert f"xcloudfree {command}" in cli, f"the CLI reference lacks the command {command!r}"
    figures = {p.stem for p in (site / "images" / "examples").glob("*.png")}
    assert figures == {p.stem for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_")}


def test_strict_build_fails_on_a_broken_link_and_a_missing_api_object(tmp_path: Path):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Broken\n\nSee [a page that does not exist](nowhere.md).\n")
    (docs / "api.md").write_text("# API\n\n::: xcloudfree.no_such_module\n")
    config.update(docs_dir=str(docs), nav=["index.md", "api.md"], hooks=[])
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    build = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert build.returncode != 0
    assert "nowhere.md" in build.stderr
    (docs / "index.md").write_text("# Fine\n")  # only the missing API object is left to fail the build
    build = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert build.returncode != 0 and "xcloudfree.no_such_module" in build.stderr


def test_pages_render_in_a_browser_with_their_images(server: str, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    images = 0
    for path in PAGES:
        response = page.goto(f"{server}/{path}", wait_until="load")
        assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
        assert "xcloudfree" in page.title(), f"{path}: title {page.title()!r}"
        main = page.locator("article.md-content__inner")
        assert main.locator("h1").count() == 1, f"{path}: expected one h1 in the main content"
        assert len(main.inner_text()) > 200, f"{path}: almost no content"
        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not broken, f"{path}: images that did not load: {broken}"
        images += page.evaluate("() => document.querySelectorAll('article img').length")
    assert images >= 3, f"expected the examples' figures in the pages, found {images} images"
    assert not errors, f"JavaScript errors: {errors}"
    # A page that is not there gets the site's 404, so the status checks above mean something.
    assert page.goto(f"{server}/no-such-page.html").status == 404
    page.close()


def test_search_finds_a_term(server: str, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # desktop layout: the box is in the header
    page.goto(f"{server}/index.html", wait_until="load")
    box = page.locator("input.md-search__input")
    box.click()
    results = page.locator(".md-search-result__item")
    # Keystrokes, as a reader types (the search listens to them). The index is built by a web worker on first
    # use: a query typed before it is ready finds nothing, so type again until it answers (slow, shared machine).
    deadline = time.monotonic() + 90
    while results.count() == 0 and time.monotonic() < deadline:
        box.fill("")
        box.press_sequentially("SEN12MS-CR")
        page.wait_for_timeout(1000)
    assert results.count() >= 3
    assert "SEN12MS" in page.locator(".md-search-result").inner_text()
    # The first hit leads to a page that exists and holds the term.
    href = results.first.locator("a").first.get_attribute("href")
    response = page.goto(urljoin(page.url, href), wait_until="load")
    assert response is not None and response.status == 200, href
    assert "xcloudfree" in page.title() and "SEN12MS" in page.locator("article").inner_text()
    page.close()
