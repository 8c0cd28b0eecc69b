"""The web chat: browser and conversation keys over real HTTP, and the page itself in headless Chromium
(Debian's, driven by Playwright) against a real ``sopagent serve`` on loopback."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from postgres import free_port
from server_harness import CARD, DISPUTE, ID_MARIA, LARGE_PAYMENT, LOST, ServerProcess, cli_key, say

from sopagent.operations import Operations
from sopagent.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def bank_site(tmp_path: Path) -> Iterator[str]:
    """Another origin (``localhost`` on its own port) whose page embeds the widget."""
    root = tmp_path / "bank"
    root.mkdir()
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{port}"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(db: str, bank_site: str) -> Iterator[ServerProcess]:
    server = ServerProcess(db, "--chat-origin", bank_site)
    yield server
    server.stop()


def _started(url: str, key: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/conversations", json={"policy": "card_services", **body},
                      headers={"Authorization": f"Bearer {key}"})


def test_a_browser_key_starts_conversations_whose_keys_reach_only_their_own(served: ServerProcess, db: str) -> None:
    browser = cli_key(db, "browser")
    customer = cli_key(db, "customer")
    first, second = (_started(served.url, browser).json() for _ in range(2))
    assert first["conversation_key"] and first["conversation_key"] != second["conversation_key"]
    mine = {"Authorization": f"Bearer {first['conversation_key']}"}
    posted = httpx.post(f"{served.url}/v1/conversations/{first['conversation_id']}/messages", headers=mine,
                        json={"text": say(LOST)})
    assert posted.status_code == 200 and posted.json()["status"] == "sent"
    # another visitor's conversation of the same tenant is unknown to this key, for every route
    other = second["conversation_id"]
    for response in (
        httpx.post(f"{served.url}/v1/conversations/{other}/messages", headers=mine, json={"text": "hi"}),
        httpx.get(f"{served.url}/v1/conversations/{other}/operator-replies", headers=mine, params={"wait": 0}),
        httpx.get(f"{served.url}/v1/decisions/{posted.json()['decision_id'] + 0}/delivery",
                  headers={"Authorization": f"Bearer {second['conversation_key']}"}, params={"wait": 0}),
    ):
        assert response.status_code == 404, response.text
    # the audit view is for the back end, not the visitor; the published key only starts conversations
    assert httpx.get(f"{served.url}/v1/conversations/{first['conversation_id']}", headers=mine).status_code == 403
    as_browser = {"Authorization": f"Bearer {browser}"}
    refused = httpx.post(f"{served.url}/v1/conversations/{first['conversation_id']}/messages", headers=as_browser,
                         json={"text": "hi"})
    assert refused.status_code == 403 and "browser" in refused.json()["error"]
    assert _started(served.url, browser, customer_ref="cust-1").status_code == 422
    assert _started(served.url, mine["Authorization"].split()[1]).status_code == 403  # a conversation key starts none
    # the tenant's back end still reaches the visitor's conversation
    assert httpx.get(f"{served.url}/v1/conversations/{first['conversation_id']}",
                     headers={"Authorization": f"Bearer {customer}"}).status_code == 200


def test_the_chat_files_carry_a_strict_content_security_policy(served: ServerProcess, bank_site: str) -> None:
    page = httpx.get(f"{served.url}/chat")
    policy = page.headers["content-security-policy"]
    assert page.status_code == 200 and "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and f"frame-ancestors 'self' {bank_site}" in policy
    assert "<script" in page.text and "http" not in page.text.split("<body>")[0].replace("http-equiv", "")
    widget = httpx.get(f"{served.url}/chat/widget.js")
    assert widget.headers["content-type"].startswith("text/javascript")
    assert widget.headers["cross-origin-resource-policy"] == "cross-origin"
    assert widget.headers["x-content-type-options"] == "nosniff"


def test_serve_refuses_a_chat_origin_that_is_not_one(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sopagent.cli", "serve", CARD, "--model", "echo",
                          "--chat-origin", "https://bank.example/path; script-src *"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "is not an origin" in out.stderr and "scheme://host[:port]" in out.stderr


# --- in a real browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SOPAGENT_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}; install Debian's chromium package")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def _contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two ``rgb(r, g, b)`` colours."""

    def luminance(colour: str) -> float:
        channels = [int(part) / 255 for part in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _send(frame: Any, text: str) -> None:
    """Type a message as a person does: focus the box, type, press Enter."""
    box = frame.get_by_label("Your message")
    box.click()
    box.fill(text)
    box.press("Enter")


def test_a_whole_conversation_through_the_embedded_widget(browser: Any, served: ServerProcess, db: str,
                                                          bank_site: str, tmp_path: Path) -> None:
    browser_key = cli_key(db, "browser")
    (tmp_path / "bank" / "index.html").write_text(
        '<!doctype html><html lang="en"><head><title>North Bank</title></head><body><h1>North Bank</h1>'
        f'<script src="{served.url}/chat/widget.js" data-key="{browser_key}" data-policy="card_services" '
        'data-title="Card services"></script></body></html>')
    page = browser.new_page(viewport={"width": 390, "height": 800})  # a phone-sized screen
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{bank_site}/index.html")
    opener = page.get_by_role("button", name="Chat with us")
    assert opener.get_attribute("aria-expanded") == "false"
    opener.click()
    assert opener.get_attribute("aria-expanded") == "true"
    frame = page.frame_locator("iframe[title='Card services']")
    frame.get_by_text("Connected").wait_for()
    assert frame.locator("h1").inner_text() == "Card services"
    assert frame.get_by_role("log", name="Conversation").count() == 1  # announced to screen readers
    ops = Operations(Store(db), "ana")
    catalog_text = partial(_catalog_text, ops)

    # a reply held for approval shows the holding text, then turns into the approved one
    for count, facts in enumerate((DISPUTE, ID_MARIA), start=1):
        _send(frame, say(facts))
        frame.locator(".from-agent").nth(count - 1).wait_for()
    _send(frame, say(LARGE_PAYMENT))
    held = frame.locator(".from-agent.held")
    held.wait_for()
    [pending] = ops.store.pending_decisions()
    conversation_id = pending.conversation_id
    assert held.locator(".text").inner_text() == catalog_text(conversation_id, "holding_for_review")
    assert held.get_attribute("aria-busy") == "true"
    ops.approve(pending.id or 0, "checked")  # the reply's text is filled once the released dispute is opened
    frame.locator(".from-agent.approved").wait_for()
    assert "€899.00" in frame.locator(".from-agent.approved .text").inner_text()
    assert frame.locator(".held").count() == 0 and frame.locator(".from-agent").count() == 3

    # after a take-over the operator's catalog replies arrive on their own
    ops.take_over(conversation_id, "customer needs a person")
    sent = ops.reply(conversation_id, "ask_fee_type", {}, "")
    operator_line = frame.locator(".from-operator .text")
    operator_line.wait_for()
    assert operator_line.inner_text() == sent.sent_text
    ops.hand_back(conversation_id, "anything_else", "done")

    # text is shown as text, never as markup; the end of the conversation closes the composer
    markup = "<img src=x onerror=document.title=1><b>bold</b>"
    _send(frame, say({"intent": "nothing_else", "handoff": "not_requested"}, note=markup))
    frame.get_by_text("This conversation has ended").wait_for()
    assert markup in frame.locator(".from-customer .text").last.inner_text()
    assert frame.locator(".messages img, .messages b").count() == 0 and page.title() == "North Bank"
    assert frame.locator(".from-agent .text").last.inner_text() == catalog_text(conversation_id, "goodbye")
    assert frame.get_by_label("Your message").is_disabled()
    assert frame.get_by_role("button", name="Send").is_disabled()

    # readable: every message's text against its bubble meets WCAG AA; nothing wider than the phone
    colours = frame.locator(".message").evaluate_all(
        "items => items.map(i => [getComputedStyle(i).color, getComputedStyle(i).backgroundColor])")
    assert colours and all(_contrast(fg, bg) >= 4.5 for fg, bg in colours), colours
    inner = page.frame_locator("iframe").locator("html")
    assert inner.evaluate("e => e.scrollWidth <= e.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _check_screenshot(page, frame, tmp_path)
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def _catalog_text(ops: Operations, conversation_id: str, response_id: str) -> str:
    return ops.catalog_for(ops.store.get_conversation(conversation_id))[response_id].text


def _check_screenshot(page: Any, frame: Any, tmp_path: Path) -> None:
    """The screenshot shows the chat: the customer's bubbles in their colour where the page lays them out,
    and the operator's reply in its own."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot(path=str(tmp_path / "web-chat.png")))).convert("RGB")
    assert shot.size == (390, 800)
    frame_box = page.locator("iframe").bounding_box()
    for selector, css_colour in ((".from-customer", "#0b4f9c"), (".from-operator", "#fff4d6")):
        bubble = frame.locator(selector).last
        bubble.scroll_into_view_if_needed()
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        box = bubble.bounding_box()
        assert box is not None and frame_box is not None
        # a point inside the bubble's padding, away from its text and rounded corners
        x, y = int(box["x"] + box["width"] - 4), int(box["y"] + box["height"] / 2)
        expected = tuple(int(css_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert _close(shot.getpixel((x, y)), expected), (selector, shot.getpixel((x, y)), expected)


def _close(actual: Any, expected: tuple[int, ...]) -> bool:
    return all(abs(a - e) <= 8 for a, e in zip(actual, expected))


def test_the_page_alone_works_from_the_keyboard(browser: Any, served: ServerProcess, db: str) -> None:
    browser_key = cli_key(db, "browser")
    page = browser.new_page(viewport={"width": 1024, "height": 700})
    page.goto(f"{served.url}/chat#key={browser_key}&policy=card_services")
    page.get_by_text("Connected").wait_for()
    assert browser_key not in page.url  # the key left the address bar
    assert page.evaluate("document.activeElement.id") == "message"  # ready to type, no mouse needed
    page.keyboard.type(say(LOST))
    page.keyboard.press("Enter")
    page.locator(".from-agent").first.wait_for()
    assert page.locator(".from-customer .text").inner_text() == say(LOST)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Send"
    described = page.get_by_label("Your message").get_attribute("aria-describedby")
    assert "Enter" in page.locator(f"#{described}").inner_text()


def test_the_page_says_what_is_missing_without_a_key(browser: Any, served: ServerProcess) -> None:
    page = browser.new_page()
    page.goto(f"{served.url}/chat")
    page.get_by_text("This chat is not set up").wait_for()
    assert page.get_by_label("Your message").is_disabled()
    page.goto(f"{served.url}/chat#key=sop_not-a-key&policy=card_services")
    page.reload()
    page.get_by_text("The chat is unavailable").wait_for()
    assert "unknown or revoked API key" in page.locator("#chat-state").inner_text()


def test_a_german_page_gets_german_replies_and_a_german_chat(browser: Any, served: ServerProcess, db: str) -> None:
    browser_key = cli_key(db, "browser")
    page = browser.new_page(viewport={"width": 390, "height": 700})
    page.goto(f"{served.url}/chat#key={browser_key}&policy=card_services&language=de&title=Kartenservice")
    page.get_by_text("Verbunden").wait_for()
    assert page.evaluate("document.documentElement.lang") == "de"
    assert page.get_by_role("button", name="Senden").count() == 1
    box = page.get_by_label("Ihre Nachricht")
    box.fill(say(LOST))
    box.press("Enter")
    reply = page.locator(".from-agent .text").first
    reply.wait_for()
    assert reply.inner_text().startswith("Bevor ich Ihr Konto ansehen kann")
    assert page.locator(".from-agent .who").first.inner_text() == "Assistent"
    # a language the catalog does not speak is refused with the languages it does
    refused = httpx.post(f"{served.url}/v1/conversations", json={"policy": "card_services", "language": "fr"},
                         headers={"Authorization": f"Bearer {browser_key}"})
    assert refused.status_code == 422 and "en, de" in refused.json()["error"]


def test_a_reload_shows_the_conversation_again_and_still_waits_for_the_held_reply(browser: Any, served: ServerProcess,
                                                                                 db: str) -> None:
    browser_key = cli_key(db, "browser")
    page = browser.new_page()
    page.goto(f"{served.url}/chat#key={browser_key}&policy=card_services")
    page.get_by_text("Connected").wait_for()
    for count, facts in enumerate((DISPUTE, ID_MARIA, LARGE_PAYMENT), start=1):
        _send(page, say(facts))
        page.locator(".from-agent").nth(count - 1).wait_for()
    page.locator(".held").wait_for()
    page.reload()  # the address has no key any more: the tab keeps it
    page.get_by_text("Connected").wait_for()
    assert page.locator(".from-customer .text").all_inner_texts() == [say(DISPUTE), say(ID_MARIA), say(LARGE_PAYMENT)]
    assert page.locator(".from-agent").count() == 3 and page.locator(".held").count() == 1
    ops = Operations(Store(db), "ana")
    [pending] = ops.store.pending_decisions()
    ops.approve(pending.id or 0, "checked")
    page.locator(".from-agent.approved").wait_for()
    assert "€899.00" in page.locator(".from-agent.approved .text").inner_text()
    # another visitor's key cannot read this transcript; the back end's key can
    other = httpx.post(f"{served.url}/v1/conversations", json={"policy": "card_services"},
                       headers={"Authorization": f"Bearer {browser_key}"}).json()["conversation_key"]
    assert httpx.get(f"{served.url}/v1/conversations/{pending.conversation_id}/transcript",
                     headers={"Authorization": f"Bearer {other}"}).status_code == 404
    # an ended conversation is not resumed: a reload starts a new one
    _send(page, say({"intent": "nothing_else", "handoff": "not_requested"}))
    page.get_by_text("This conversation has ended").wait_for()
    page.reload()
    page.get_by_text("Connected").wait_for()
    assert page.locator(".message").count() == 0 and page.get_by_label("Your message").is_enabled()
