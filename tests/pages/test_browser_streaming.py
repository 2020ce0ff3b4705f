"""The chat page streaming from the real backend, in headless Chromium on a live server (PostgreSQL).

The agents are the real LangChain OpenAI client talking to the local OpenAI-protocol
server (`tests.support.fake_openai`), which streams its answer a token at a time.
Two agents fill their bubbles side by side, then the server-rendered turn
replaces them; Stop cancels mid-stream and the turn is charged for what ran.

These need issue 13's streaming backend (`Accept: text/event-stream` on the turn
endpoint, `POST …/turns/cancel`, `Turn.status`, `usage_source`) and the streaming
fake model server (`delay`, `token_interval`, `timings()`); `test_browser_stream_contract.py`
pins the page to the same event contract without them.
"""

from __future__ import annotations

import time

import pytest

from billing.models import UsageEvent
from chat.models import Turn
from tests.factories import RoomFactory, UserFactory
from tests.support.browser import chromium, screenshot
from tests.support.chat_page import (
    UUID_RE,
    both_filling,
    header_balance,
    open_room,
    side_by_side,
    snapshots,
    texts_seen,
    wait_for_turns,
)
from tests.support.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

# Markdown, so the rendered turn shows a list and a table where the stream showed plain text.
REPLY = (
    "Primes **matter** here:\n\n"
    "- 2 is the only even prime\n"
    "- 3 and 5 are twin primes\n\n"
    "| n | prime |\n"
    "|---|---|\n"
    "| 7 | yes |\n"
    "| 9 | no |\n"
)
LONG_REPLY = " ".join(f"word{i}" for i in range(400))


def test_two_agents_stream_side_by_side_then_the_rendered_turn(
    live_server, settings, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="ada")
    room = RoomFactory(owner=user, title="Duel", agents=["gpt-4o", "gpt-4o-mini"])
    settings.LLM_MAX_RETRIES = 0
    with (
        FakeOpenAI(reply=REPLY, token_interval=0.08, prompt_tokens=None, completion_tokens=None) as fake,
        chromium() as browser,
    ):
        settings.OPENAI_API_KEY = "sk-test-local"
        settings.OPENAI_BASE_URL = fake.base_url
        page, errors = open_room(browser, base, room, console_errors=False)
        posts: list[dict] = []
        page.on(
            "request",
            lambda r: posts.append(r.headers) if r.method == "POST" and r.url.endswith("/turns/") else None,
        )
        stream_types: list[str] = []
        page.on(
            "response",
            lambda r: (
                stream_types.append(r.headers.get("content-type", ""))
                if r.request.method == "POST" and r.url.endswith("/turns/")
                else None
            ),
        )

        page.fill("#composer-content", "@all Compare your answers: why do primes matter?")
        sent_at = time.monotonic()
        page.click("#composer-send")
        pending = page.locator('[data-testid="pending-turn"]')
        pending.wait_for(timeout=2_000)
        assert time.monotonic() - sent_at < 1.0, "my message shows at once, before the models answer"
        assert "why do primes matter?" in pending.locator(".bubble--user").inner_text()
        wait_for_turns(page, 1, timeout=60_000)

        snaps = snapshots(page)
        assert any(side_by_side(s) for s in snaps), "the two answers streamed side by side"
        assert any(both_filling(s) for s in snaps), "both bubbles were filling at the same time"
        for alias in ("gpt-4o", "gpt-4o-mini"):
            seen = texts_seen(snaps, alias)
            assert len(seen) >= 5, f"{alias} grew token by token: {seen}"
            assert all(seen[i + 1].startswith(seen[i]) for i in range(len(seen) - 1))
            assert seen[-1].strip() == REPLY.strip()  # plain text while streaming

        # The bubbles were replaced by the server's rendering: Markdown, costs, the new balance.
        assert pending.count() == 0
        turn = Turn.objects.get(room=room)
        rendered = page.locator(f'[data-testid="turn"][data-turn-id="{turn.pk}"]')
        answers = rendered.locator('[data-testid="answer"]')
        assert answers.count() == 2
        for index in range(2):
            body = answers.nth(index).locator('[data-testid="answer-body"]')
            assert body.locator("table td").count() == 4
            assert body.locator("li").count() == 2
            assert body.locator("strong").inner_text() == "matter"
        assert rendered.locator('[data-testid="turn-total"] strong').inner_text() == str(turn.credits_burned)
        user.wallet.refresh_from_db()
        assert header_balance(page) == user.wallet.balance
        assert page.locator("#composer-status").inner_text() == (
            f"Answered. This turn burned {turn.credits_burned} credits; balance {user.wallet.balance}."
        )
        assert page.locator("#composer-stop").is_hidden()
        screenshot(page, "chat-streamed")

        (post,) = posts
        assert post["accept"] == "text/event-stream"
        assert post["content-type"] == "application/json"
        assert post["x-csrftoken"]
        assert UUID_RE.match(post["idempotency-key"])
        assert stream_types[0].startswith("text/event-stream")
        assert turn.status == "completed"
        agent_calls = UsageEvent.objects.filter(turn=turn, purpose="agent")
        assert sorted(agent_calls.values_list("model_alias", flat=True)) == ["gpt-4o", "gpt-4o-mini"]
        assert {call.usage_source for call in agent_calls} == {"provider"}
        assert all(t["stream"] for t in fake.timings() if t["model"] == "gpt-4o")
        assert errors == []


def test_stop_cancels_mid_stream_and_the_turn_is_charged_for_what_ran(
    live_server, settings, orm_in_playwright_thread
):
    base = live_server.url
    user = UserFactory(username="grace")
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    settings.LLM_MAX_RETRIES = 0
    with (
        FakeOpenAI(reply=LONG_REPLY, token_interval=0.05, prompt_tokens=None, completion_tokens=None) as fake,
        chromium() as browser,
    ):
        settings.OPENAI_API_KEY = "sk-test-local"
        settings.OPENAI_BASE_URL = fake.base_url
        page, errors = open_room(browser, base, room, console_errors=False)
        requests: dict[str, list] = {"turn": [], "cancel": []}
        page.on(
            "request",
            lambda r: (
                requests["turn" if r.url.endswith("/turns/") else "cancel"].append(r)
                if r.method == "POST" and "/turns/" in r.url
                else None
            ),
        )

        page.fill("#composer-content", "Count for me, slowly")
        page.click("#composer-send")
        stop = page.locator("#composer-stop")
        stop.wait_for(state="visible", timeout=5_000)
        page.wait_for_function(
            "() => (document.querySelector('[data-testid=\"streaming-answer\"] .bubble__body') || {})"
            ".textContent?.split(' ').length > 10",
            timeout=30_000,
        )
        screenshot(page, "chat-before-stop")
        stop.click()
        stopped_at = time.monotonic()
        wait_for_turns(page, 1, timeout=15_000)
        assert time.monotonic() - stopped_at < 5, "Stop ends the turn long before the model would have"

        (turn_post,) = requests["turn"]
        (cancel,) = requests["cancel"]
        assert cancel.url == f"{base}/api/v1/rooms/{room.pk}/turns/cancel"
        assert cancel.post_data_json == {"idempotency_key": turn_post.headers["idempotency-key"]}
        assert cancel.headers["x-csrftoken"]
        assert cancel.response().ok

        turn = Turn.objects.get(room=room)
        assert turn.status == "cancelled"
        call = UsageEvent.objects.get(turn=turn, purpose="agent")
        assert call.usage_source == "estimated"
        assert turn.credits_burned == call.credits_burned > 0
        answer = turn.messages.get(role="assistant").content
        assert answer.startswith("word0 word1") and len(answer) < len(LONG_REPLY)

        rendered = page.locator(f'[data-testid="turn"][data-turn-id="{turn.pk}"]')
        assert "Stopped" in rendered.locator('[data-testid="turn-status"]').inner_text()
        assert rendered.locator('[data-testid="answer-body"]').inner_text().strip() == answer.strip()
        assert "(estimated)" in rendered.locator('[data-testid="answer-cost"]').inner_text()
        user.wallet.refresh_from_db()
        assert header_balance(page) == user.wallet.balance
        assert (
            page.locator("#composer-status")
            .inner_text()
            .startswith(f"Stopped. This turn burned {turn.credits_burned} credits for what ran;")
        )
        assert stop.is_hidden()
        assert page.locator("#composer-send").is_enabled()
        # The provider stream was cut, not read to its end.
        (agent_stream,) = [t for t in fake.timings() if t["model"] == "gpt-4o" and t["stream"]]
        assert agent_stream["chunks"] < 400
        screenshot(page, "chat-stopped")
        assert errors == []
