"""chat.js against the streaming contract of issue 13, in headless Chromium on a live server.

The turn endpoint is `tests.support.sse_contract.ContractStream`: it runs the real turn
(offline model, real charge, real fragment) and plays it back as the contract's
Server-Sent Events, a word at a time with heartbeats, split chunks and CRLF. These
tests pin the page to the contract on its own; `test_browser_streaming.py` runs the
same page against the real streaming backend.
"""

from __future__ import annotations

import re
import time

import pytest

from billing.models import CreditTransaction, UsageEvent
from chat.models import Turn
from tests.factories import RoomFactory, UserFactory
from tests.support.browser import chromium, screenshot
from tests.support.chat_page import (
    UUID_RE,
    both_filling,
    header_balance,
    log_in,
    open_room,
    side_by_side,
    snapshots,
    stacked,
    texts_seen,
    wait_for_turns,
)
from tests.support.sse_contract import ContractStream

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def stream(monkeypatch) -> ContractStream:
    stand_in = ContractStream()
    stand_in.install(monkeypatch)
    return stand_in


def test_two_agents_stream_side_by_side_then_the_server_rendered_turn(
    live_server, stream, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="ada")
    room = RoomFactory(owner=user, title="Duel", agents=["gpt-4o", "deepseek"])
    with chromium() as browser:
        page, errors = open_room(browser, base, room)
        fragment_gets: list[str] = []
        page.on(
            "request",
            lambda r: fragment_gets.append(r.url) if "/turns/" in r.url and r.method == "GET" else None,
        )

        page.fill("#composer-content", "Compare your answers: what is a prime number?")
        page.click("#composer-send")
        # My message is on the page at once, before any answer.
        pending = page.locator('[data-testid="pending-turn"]')
        pending.wait_for(timeout=2_000)
        assert "what is a prime number?" in pending.locator(".bubble--user").inner_text()
        page.locator("#composer-stop").wait_for(state="visible", timeout=5_000)
        wait_for_turns(page, 1)

        snaps = snapshots(page)
        # Both agents had a bubble, side by side, each filling word by word.
        assert any(side_by_side(s) for s in snaps)
        assert any(both_filling(s) for s in snaps), "both bubbles were filling at the same time"
        assert all(s["stopVisible"] for s in snaps)
        turn = Turn.objects.get(room=room)
        for message in turn.messages.filter(role="assistant"):
            seen = texts_seen(snaps, message.model_alias)
            assert len(seen) >= 5, f"{message.model_alias} grew in steps: {seen}"
            assert all(seen[i + 1].startswith(seen[i]) for i in range(len(seen) - 1))
            assert seen[-1] == message.content  # plain text while streaming
        # A done bubble shows the server's figures as sent.
        done = [b for s in snaps for b in s["bubbles"] if b["done"]]
        assert done

        # The bubbles were replaced by the fragment the server rendered.
        assert pending.count() == 0
        assert page.locator('[data-testid="streaming-answer"]').count() == 0
        rendered = page.locator('[data-testid="turn"]')
        assert rendered.get_attribute("data-turn-id") == str(turn.pk)
        assert rendered.locator('[data-testid="answer"]').count() == 2
        assert rendered.locator('[data-testid="turn-total"] strong').inner_text() == str(turn.credits_burned)
        assert fragment_gets == [f"{base}/rooms/{room.pk}/turns/{turn.pk}/"]
        user.wallet.refresh_from_db()
        assert header_balance(page) == user.wallet.balance
        assert page.locator("#composer-status").inner_text() == (
            f"Answered. This turn burned {turn.credits_burned} credits; balance {user.wallet.balance}."
        )
        assert page.locator("#composer-stop").is_hidden()
        assert page.locator("#composer-send").is_enabled()
        assert page.input_value("#composer-content") == ""
        screenshot(page, "chat-stream-contract")

        (sent,) = stream.requests
        assert UUID_RE.match(sent["idempotency_key"])
        assert sent["csrf"]
        assert sent["content_type"] == "application/json"
        assert sent["body"] == {"content": "Compare your answers: what is a prime number?"}
        assert errors == []


def test_stop_posts_the_key_and_keeps_reading_until_the_cancelled_turn(
    live_server, stream, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="grace")
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    stream.interval = 0.3
    cancels: list[dict] = []

    def cancel(route):
        cancels.append({"headers": route.request.headers, "body": route.request.post_data_json})
        stream.cancel.set()
        route.fulfill(status=202, content_type="application/json", body="{}")

    with chromium() as browser:
        page, errors = open_room(browser, base, room)
        page.route(f"**/api/v1/rooms/{room.pk}/turns/cancel", cancel)
        page.fill("#composer-content", "Tell me a long story")
        page.click("#composer-send")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"streaming-answer\"] .bubble__body')]"
            ".filter(b => b.textContent).length === 2",
            timeout=10_000,
        )
        screenshot(page, "chat-streaming")
        stop = page.locator("#composer-stop")
        stop.click()
        assert stop.is_disabled() and stop.inner_text() == "Stopping…"
        stopped_at = time.monotonic()
        wait_for_turns(page, 1, timeout=10_000)
        assert time.monotonic() - stopped_at < 3

        (sent,) = stream.requests
        (cancelled,) = cancels
        assert cancelled["body"] == {"idempotency_key": sent["idempotency_key"]}
        assert cancelled["headers"]["x-csrftoken"] == sent["csrf"]
        assert cancelled["headers"]["content-type"] == "application/json"
        turn = Turn.objects.get(room=room)
        assert (
            page.locator("#composer-status")
            .inner_text()
            .startswith(f"Stopped. This turn burned {turn.credits_burned} credits for what ran; balance ")
        )
        assert stop.is_hidden()
        assert page.locator('[data-testid="pending-turn"]').count() == 0
        assert errors == []


def test_an_error_event_shows_its_message_and_send_retries_with_the_same_key(
    live_server, stream, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="linus")
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    stream.fail_after = 2
    stream.error = {"code": "write_failed", "message": "The turn could not be saved."}
    with chromium() as browser:
        page, errors = open_room(browser, base, room)
        page.fill("#composer-content", "Compare the two of you")
        page.click("#composer-send")
        box = page.locator("#composer-error")
        box.wait_for(state="visible", timeout=10_000)
        assert (
            box.inner_text()
            == "The turn could not be saved. Press Send to try again; you will not be charged twice."
        )
        # The half-written bubbles are gone (nothing was shown as recorded); the message stays for a retry.
        assert page.locator('[data-testid="pending-turn"]').count() == 0
        assert page.input_value("#composer-content") == "Compare the two of you"
        assert page.locator("#composer-send").is_enabled()

        page.click("#composer-send")
        wait_for_turns(page, 1)
        assert box.is_hidden()
        first, retry = stream.requests
        assert retry["idempotency_key"] == first["idempotency_key"]
        # The stand-in had committed the turn before failing: the retry replayed it, charging nothing more.
        turn = Turn.objects.get(room=room)
        metered = UsageEvent.objects.filter(turn=turn, metered=True).count()
        assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == metered
        assert errors == []


def test_on_a_phone_the_bubbles_stack_and_nothing_scrolls_sideways(
    live_server, stream, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="mobile")
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    with chromium() as browser:
        page, errors = open_room(browser, base, room, width=390)
        page.fill("#composer-content", "Compare yourselves on a small screen")
        page.click("#composer-send")
        wait_for_turns(page, 1)
        snaps = [s for s in snapshots(page) if len(s["bubbles"]) == 2]
        assert snaps and all(stacked(s) for s in snaps)
        answers = page.locator('[data-testid="answer"]')
        first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
        assert first["x"] == second["x"] and first["y"] < second["y"]
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "chat-stream-phone")

        # The same turn on a wide screen: the answers sit side by side.
        page.set_viewport_size({"width": 1280, "height": 900})
        first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
        assert first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]
        assert errors == []


def test_the_form_still_works_with_javascript_off(live_server, orm_in_playwright_thread):
    base = live_server.url
    user = UserFactory(username="nojs")
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    with chromium() as browser:
        context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        log_in(page, base, "nojs")
        page.goto(f"{base}/rooms/{room.pk}/")
        assert page.locator("#composer-stop").is_hidden()
        page.fill("#composer-content", "Hello without **JavaScript**")
        page.click("#composer-send")
        page.wait_for_url(re.compile(rf".*/rooms/{room.pk}/#turn-\d+$"))
        turn = Turn.objects.get(room=room)
        rendered = page.locator(f"#turn-{turn.pk}")
        assert "Hello without **JavaScript**" in rendered.locator(".bubble--user").inner_text()
        assert "this is a canned answer" in rendered.locator('[data-testid="answer-body"]').inner_text()
        user.wallet.refresh_from_db()
        assert header_balance(page) == user.wallet.balance
        context.close()
