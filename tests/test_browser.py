"""The chat in a real Chromium: `paperchat serve` in a subprocess, driven through Playwright.

Chromium comes from Debian (`apt-get install chromium`); Playwright cannot download browsers here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import REPO, make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts"
XSS_PAPERS = REPO / "tests" / "fixtures" / "ui" / "xss_papers.jsonl"
XSS_TITLE = "<img src=x onerror=alert(1)>"
PRUNE = "Which papers prune ResNet-50?"
# Papers of the bundled corpus that answer PRUNE (the extractive answer cites them all).
PRUNING_TITLES = ("Methods for Pruning Deep Neural Networks", "Accurate Neural Network Pruning Requires")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def paperchat_serve(index_dir: Path, log_path: Path):
    """`paperchat serve` on a free loopback port; yields its URL once it accepts connections."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--index", str(index_dir),
                                   "--port", str(port), "--llm", "extractive"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None, f"paperchat serve exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"paperchat serve did not start:\n{log_path.read_text()}"
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.5)
            url = f"http://127.0.0.1:{port}/"
            for _ in range(20):  # the URL line follows the port opening by a moment
                if url in log_path.read_text():
                    break
                time.sleep(0.25)
            assert f"chat at {url}" in log_path.read_text()
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture
def browser_page():
    """A Chromium page that records dialogs (a fired alert = injected script) and outside requests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.dialogs, page.outside_requests = [], []

        def on_dialog(dialog):
            page.dialogs.append(dialog.message)
            dialog.dismiss()

        def on_request(request):
            parsed = urlparse(request.url)
            if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in ("127.0.0.1", "localhost"):
                page.outside_requests.append(request.url)

        page.on("dialog", on_dialog)
        page.on("request", on_request)
        yield page
        browser.close()


def ask_in_page(page, question: str) -> tuple[float, float]:
    """Type the question, press Enter; seconds until the sources show, and until the answer is done."""
    box = page.locator("#pc-question textarea")
    box.fill(question)
    box.press("Enter")
    pressed = time.perf_counter()
    page.locator("#pc-sources table").wait_for(state="visible", timeout=60_000)
    sources_s = time.perf_counter() - pressed
    page.locator("#pc-chat .pc-cites, #pc-chat .pc-abstain").first.wait_for(state="visible", timeout=60_000)
    return sources_s, time.perf_counter() - pressed


def save_screenshot(page, path: Path) -> None:
    """The page with the chat scrolled back to the question, so the shot shows question and answer.

    With the wheel, as a person would: the chat scrolls itself back down after a scripted scroll.
    """
    box = page.locator("#pc-chat").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(10):
        page.mouse.wheel(0, -2000)
        page.wait_for_timeout(50)
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def test_chat_in_chromium_answers_with_citations_and_sources(bundled_index, browser_page, tmp_path):
    page = browser_page
    with paperchat_serve(bundled_index.store.index_dir, tmp_path / "serve.log") as url:
        page.goto(url)
        header = page.locator(".pc-header")
        header.wait_for(timeout=30_000)
        assert "573 papers" in header.inner_text() and "extractive" in header.inner_text()

        sources_s, answer_s = ask_in_page(page, PRUNE)
        print(f"\nEnter → sources shown: {sources_s:.2f} s; Enter → answer complete: {answer_s:.2f} s")

        chat_text = page.locator("#pc-chat").inner_text()
        cites = page.locator("#pc-chat .pc-cite")
        assert f"{cites.count()} matching papers" in chat_text and cites.count() >= 2
        for title in PRUNING_TITLES:
            assert title in chat_text
        sources = page.locator("#pc-sources")
        assert page.locator("#pc-sources tr.pc-in").count() == cites.count()
        assert page.locator("#pc-sources tbody tr").count() > cites.count()  # what was left out shows too
        for title in PRUNING_TITLES:
            assert title in sources.inner_text()

        abstract = cites.first.locator("details p")
        assert not abstract.is_visible()
        cites.first.locator("summary").click()  # the abstract is one click away
        assert abstract.is_visible()
        cites.first.locator("summary").click()
        save_screenshot(page, ARTIFACTS / "browser-chat.png")

    assert page.dialogs == []
    assert page.outside_requests == [], "the page must work offline"


def test_markup_in_titles_and_abstracts_shows_as_text_in_chromium(browser_page, tmp_path):
    from ingest.pipeline import ingest

    settings = make_settings(tmp_path / "xss-index")
    ingest([XSS_PAPERS], settings)
    page = browser_page
    with paperchat_serve(settings.store.index_dir, tmp_path / "serve.log") as url:
        page.goto(url)
        ask_in_page(page, PRUNE)
        for summary in page.locator("#pc-chat .pc-cite summary").all():
            summary.click()  # the abstract with the <script> payload is now rendered
        chat_text = page.locator("#pc-chat").inner_text()
        assert XSS_TITLE in chat_text and "<script>alert(1)</script>" in chat_text
        assert XSS_TITLE in page.locator("#pc-sources").inner_text()
        assert page.locator("img[src='x']").count() == 0
        assert page.locator("#pc-chat script, #pc-sources script").count() == 0
        page.wait_for_timeout(500)  # give an injected handler the chance to fire
    assert page.dialogs == []
