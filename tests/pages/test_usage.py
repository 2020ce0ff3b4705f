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
