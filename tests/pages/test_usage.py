"""The usage page: rows, filters, pagination, CSV link, only the user's own data."""

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from billing.models import UsageEvent
from tests.factories import RoomFactory, UsageEventFactory, UserFactory

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    return html.count('data-testid="usage-row"')


def _csv_link(html: str) -> dict:
    marker = 'href="'
    anchor = html[: html.index('data-testid="usage-csv"')]
    href = anchor[anchor.rindex(marker) + len(marker) :].split('"')[0].replace("&amp;", "&")
    parts = urlsplit(href)
    return {"path": parts.path, "query": {k: v[0] for k, v in parse_qs(parts.query).items()}}


def test_usage_requires_login(client):
    assert client.get("/usage/")["Location"] == "/login/?next=/usage/"


def test_usage_lists_own_events_with_their_figures(client):
    user = UserFactory()
    room = RoomFactory(owner=user, title="Research")
    UsageEventFactory(
        turn__room=room,
        model_alias="claude-sonnet",
        provider_model="offline:claude-sonnet",
        input_tokens=321,
        output_tokens=123,
        multiplier=Decimal("1.5000"),
        credits_burned=Decimal("0.6660"),
    )
    UsageEventFactory(
        turn__room=room,
        model_alias="default",
        purpose="manager",
        metered=False,
        multiplier=Decimal("1.0000"),
        credits_burned=Decimal(0),
    )
    UsageEventFactory(model_alias="gpt-4o", credits_burned=Decimal("42.4242"))  # another user's
    client.force_login(user)

    html = client.get("/usage/").content.decode()
    assert _rows(html) == 2
    assert "Research" in html
    assert "offline:claude-sonnet" in html
    assert ">321<" in html and ">123<" in html
    assert "×1.5 " in html
    assert ">0.6660<" in html
    assert "unmetered" in html
    assert "42.4242" not in html
    assert _csv_link(html) == {"path": "/api/v1/users/me/usage", "query": {"format": "csv"}}


def test_usage_filters_by_model_and_dates_and_carries_them_to_csv_and_pages(client):
    user = UserFactory()
    today = timezone.localdate()
    for _ in range(55):
        UsageEventFactory(turn__room__owner=user, model_alias="deepseek", credits_burned=Decimal("0.0100"))
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.5000"))
    old = UsageEventFactory(turn__room__owner=user, model_alias="deepseek", credits_burned=Decimal("7.0000"))
    UsageEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    client.force_login(user)

    html = client.get("/usage/", {"model_alias": "gpt-4o"}).content.decode()
    assert _rows(html) == 1
    assert ">0.5000<" in html

    since = (today - timedelta(days=1)).isoformat()
    html = client.get(
        "/usage/", {"model_alias": "deepseek", "since": since, "until": today.isoformat()}
    ).content
    html = html.decode()
    assert _rows(html) == 50  # first page of 55
    assert "7.0000" not in html
    assert "Page 1 of 2" in html
    assert f"model_alias=deepseek&amp;since={since}&amp;until={today.isoformat()}&amp;page=2" in html
    assert _csv_link(html)["query"] == {
        "model_alias": "deepseek",
        "since": since,
        "until": today.isoformat(),
        "format": "csv",
    }
    page2 = client.get(
        "/usage/", {"model_alias": "deepseek", "since": since, "until": today.isoformat(), "page": 2}
    ).content.decode()
    assert _rows(page2) == 5

    old_day = (today - timedelta(days=10)).isoformat()
    html = client.get("/usage/", {"since": old_day, "until": old_day}).content.decode()
    assert _rows(html) == 1
    assert ">7.0000<" in html


def test_usage_bad_filters_are_shown_not_crashing(client):
    user = UserFactory()
    UsageEventFactory(turn__room__owner=user)
    client.force_login(user)
    response = client.get("/usage/", {"since": "2026-02-10", "until": "2026-02-01"})
    assert response.status_code == 200
    assert "The end date is before the start date." in response.content.decode()
    response = client.get("/usage/", {"since": "not-a-date", "model_alias": "no-such-model"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Enter a valid date." in html
    assert "Select a valid choice." in html


def _cells(html: str, testid: str) -> dict[str, list[str]]:
    """Rows of one breakdown table: first cell's text → the other cells' texts."""
    import re

    rows = {}
    for row in re.findall(rf'<tr data-testid="{testid}"[^>]*>(.*?)</tr>', html, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        rows[cells[0]] = cells[1:]
    return rows


def _totals(html: str) -> dict[str, str]:
    import re

    return {
        name: re.search(rf'data-testid="total-{name}">([^<]*)<', html).group(1)
        for name in ("credits", "calls", "input", "output")
    }


@pytest.fixture
def spend(db):
    """Six calls over three days in one user's room, and another user's call."""
    user = UserFactory()
    room = RoomFactory(owner=user, title="Research")
    now = timezone.now()

    def event(model_alias, input_tokens, output_tokens, credits_burned, days_ago=0, **extra):
        made = UsageEventFactory(
            turn__room=room, model_alias=model_alias, input_tokens=input_tokens,
            output_tokens=output_tokens, credits_burned=Decimal(credits_burned), **extra,
        )  # fmt: skip
        if days_ago:
            UsageEvent.objects.filter(pk=made.pk).update(created_at=now - timedelta(days=days_ago))

    event("gpt-4o", 100, 50, "0.3000")
    event("gpt-4o", 100, 50, "0.3000")
    event("deepseek", 200, 20, "0.1100", multiplier=Decimal("0.5"))
    event("default", 40, 5, "0", purpose="manager", metered=False, multiplier=Decimal(1))
    event("gpt-4o", 300, 30, "0.6600", days_ago=1)
    event("claude-sonnet", 1000, 0, "1.5000", days_ago=10, multiplier=Decimal("1.5"))
    UsageEventFactory(model_alias="gpt-4o", credits_burned=Decimal("42.4242"))  # another user's
    return user


def test_usage_totals_and_breakdowns_by_model_and_by_day(client, spend):
    client.force_login(spend)
    today = timezone.localdate()
    html = client.get("/usage/").content.decode()
    assert _totals(html) == {"credits": "2.8700", "calls": "6", "input": "1740", "output": "155"}
    assert _cells(html, "by-model-row") == {
        "claude-sonnet": ["1", "1000", "0", "1.5000"],
        "deepseek": ["1", "200", "20", "0.1100"],
        "default": ["1", "40", "5", "0.0000"],
        "gpt-4o": ["3", "500", "130", "1.2600"],
    }
    by_day = _cells(html, "by-day-row")
    assert list(by_day) == [  # newest first
        today.isoformat(),
        (today - timedelta(days=1)).isoformat(),
        (today - timedelta(days=10)).isoformat(),
    ]
    assert by_day[today.isoformat()] == ["4", "440 / 125", "0.7100"]
    assert by_day[(today - timedelta(days=1)).isoformat()] == ["1", "300 / 30", "0.6600"]
    assert by_day[(today - timedelta(days=10)).isoformat()] == ["1", "1000 / 0", "1.5000"]
    assert "42.4242" not in html
    assert 'data-testid="days-hidden"' not in html


def test_usage_totals_follow_the_filter(client, spend):
    client.force_login(spend)
    today = timezone.localdate()
    html = client.get("/usage/", {"model_alias": "gpt-4o"}).content.decode()
    assert "Totals for this filter" in html
    assert _totals(html) == {"credits": "1.2600", "calls": "3", "input": "500", "output": "130"}
    assert _cells(html, "by-model-row") == {"gpt-4o": ["3", "500", "130", "1.2600"]}
    assert _cells(html, "by-day-row") == {
        today.isoformat(): ["2", "200 / 100", "0.6000"],
        (today - timedelta(days=1)).isoformat(): ["1", "300 / 30", "0.6600"],
    }

    yesterday = (today - timedelta(days=1)).isoformat()
    html = client.get("/usage/", {"since": yesterday, "until": today.isoformat()}).content.decode()
    assert _totals(html) == {"credits": "1.3700", "calls": "5", "input": "740", "output": "155"}
    assert set(_cells(html, "by-model-row")) == {"deepseek", "default", "gpt-4o"}

    html = client.get("/usage/", {"model_alias": "gemini-pro"}).content.decode()
    assert _totals(html) == {"credits": "0.0000", "calls": "0", "input": "0", "output": "0"}
    assert 'data-testid="usage-by-model"' not in html


def test_usage_by_day_lists_the_latest_days_and_says_how_many_more(client, spend, monkeypatch):
    from billing import views

    monkeypatch.setattr(views, "USAGE_DAYS_SHOWN", 2)
    client.force_login(spend)
    html = client.get("/usage/").content.decode()
    assert len(_cells(html, "by-day-row")) == 2
    assert "1 earlier day are in the totals" in html
    assert _totals(html)["credits"] == "2.8700"  # the totals still cover every day


def test_usage_rows_mark_estimated_counts_and_link_to_their_turn(client):
    user = UserFactory()
    event = UsageEventFactory(turn__room__owner=user, usage_source="estimated")
    client.force_login(user)
    html = client.get("/usage/").content.decode()
    assert ">estimated</span>" in html
    assert f'href="/rooms/{event.room_id}/#turn-{event.turn_id}"' in html
