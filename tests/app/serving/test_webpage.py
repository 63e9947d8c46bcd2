"""The web page in headless Chromium (Debian's chromium, driven by Playwright) against a real
server: the example picker covers every task type, submitting shows highlighted spans, schema
problems and server errors are shown plainly. A screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
STATIC = Path(__file__).resolve().parents[3] / "app" / "serving" / "static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 1300})
        page = context.new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda r: None if r.url.startswith(server.url) else outside.append(r.url),
        )
        page.goto(server.url + "/")
        page.wait_for_selector("#example option", state="attached")  # GET /examples answered
        yield page
        assert not outside, f"the page fetched from outside the server: {outside}"
        browser.close()


def test_picker_has_one_example_per_task_type(page, examples):
    tasks = page.eval_on_selector_all("#example option", "opts => opts.map(o => o.dataset.task)")
    assert sorted(tasks) == sorted(e["task"] for e in examples)
    assert len(set(tasks)) == len(tasks)
    labels = page.eval_on_selector_all("#example option", "opts => opts.map(o => o.textContent)")
    assert labels == [e["label"] for e in examples]
    # The first example is loaded into the form, from the server's one copy of the examples.
    assert page.input_value("#text") == examples[0]["text"]
    assert json.loads(page.input_value("#schema")) == examples[0]["schema"]


def test_the_page_carries_no_copy_of_the_examples(examples):
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert 'fetch("/examples")' in script
    assert not [e["task"] for e in examples if e["text"] in script or e["task"] in script]


def test_choosing_an_example_and_submitting_shows_spans(page, server):
    options = page.eval_on_selector_all("#example option", "opts => opts.map(o => o.value)")
    chosen = None
    for value in options:  # the first example that the random tiny checkpoint finds spans in
        page.select_option("#example", value)
        text = page.input_value("#text")
        schema = json.loads(page.input_value("#schema"))
        want = httpx.post(server.url + "/predict", json={"text": text, "schema": schema}).json()
        if want["output"]:
            chosen = (text, want)
            break
    assert chosen, "no example gives spans on the tiny checkpoint"
    text, want = chosen
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]) mark.span")
    assert page.inner_text("#highlighted").replace("\n", "") == text.replace("\n", "")
    marks = page.locator("#highlighted mark.span")
    assert marks.count() >= 1
    covered = "".join(marks.all_inner_texts())
    for chain in want["output"]:
        assert chain[-1]["span"] in covered  # every leaf span is highlighted
    assert page.locator("#chains li").count() == len(want["output"])
    assert json.loads(page.inner_text("#raw")) == want
    assert page.locator("#error").is_hidden()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webpage.png"), full_page=True)


def test_schema_problems_are_shown_before_sending(page):
    page.fill("#schema", '{"人物": [1]}')
    assert "must be null or an object" in page.inner_text("#schema-status")
    page.fill("#schema", '{"人物": ')
    assert "not valid JSON" in page.inner_text("#schema-status")
    page.click("#submit")
    assert "Fix the schema first" in page.inner_text("#error")


def test_server_errors_are_shown_plainly(page):
    page.fill("#schema", '{"人物": null}')
    page.fill("#text", "长" * 401)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "413" in message and "text_too_long" in message and "limit is 400" in message
