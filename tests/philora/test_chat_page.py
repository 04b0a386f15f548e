"""The chat page at GET / in a real headless Chromium (Debian's chromium driven by playwright)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")

from philora.commands.serve import build_state  # noqa: E402
from philora.inference import load_inference_model  # noqa: E402
from tests.philora.serving import LiveServer, random_adapter  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)")
def test_page_streams_a_reply_from_the_chosen_adapter(tmp_path):
    random_adapter(tmp_path / "pirate.safetensors", seed=3)
    adapters = [("pirate", str(tmp_path / "pirate.safetensors"))]
    live = LiveServer(build_state(load_inference_model("tiny"), "tiny", adapters))
    try:
        system, question = "You are a pirate.", "Where is the treasure?"
        expected = (
            live.client()
            .chat.completions.create(
                model="pirate",
                temperature=0,
                max_tokens=256,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            )
            .choices[0]
            .message.content
        )
        assert expected
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(live.url + "/")
                page.wait_for_function("document.querySelectorAll('#model option').length === 2")
                assert page.locator("#model option").all_inner_texts() == ["tiny", "pirate"]
                page.select_option("#model", "pirate")
                page.fill("#system", system)
                page.fill("#temperature", "0")
                chunks_seen = []
                page.on(
                    "response",
                    lambda r: (
                        chunks_seen.append(r.headers.get("content-type", ""))
                        if r.url.endswith("/v1/chat/completions")
                        else None
                    ),
                )
                page.fill("#input", question)
                page.click("#send")
                page.wait_for_selector(".msg.assistant[data-done='true']", timeout=60_000)
                assert page.inner_text(".msg.user") == question
                assert page.locator(".msg.assistant").text_content() == expected
                assert any(c.startswith("text/event-stream") for c in chunks_seen)  # it streamed
            finally:
                browser.close()
    finally:
        live.close()
