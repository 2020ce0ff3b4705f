"""The wallet page: figures, ledger pagination, chart data, only the user's own data."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import CreditTransaction, UsageEvent
from billing.selectors import usage_daily_by_model
from billing.services import wallet_debit, wallet_grant
from tests.factories import UsageEventFactory, UserFactory

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    return html.count('data-testid="ledger-row"')


def test_wallet_requires_login(client):
    response = client.get("/wallet/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/wallet/"


def test_wallet_shows_balance_lifetime_totals_and_ledger(client):
    user = UserFactory()
    wallet_id = user.wallet.pk
    wallet_debit(wallet_id=wallet_id, amount=Decimal("1.2345"), description="turn 1")
    wallet_grant(wallet_id=wallet_id, amount=Decimal("10"), description="top-up")
    other = UserFactory()
    wallet_debit(wallet_id=other.wallet.pk, amount=Decimal("77.7777"), description="someone else's turn")
    client.force_login(user)

    response = client.get("/wallet/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="wallet-balance">508.7655<' in html
    assert 'data-testid="wallet-granted">510.0000<' in html
    assert 'data-testid="wallet-burned">1.2345<' in html
    assert _rows(html) == 3
    # Newest first, signed amounts and balance_after as stored.
    assert html.index("top-up") < html.index("turn 1") < html.index("Beta grant")
    assert ">-1.2345<" in html
    assert ">+10.0000<" in html
    assert "77.7777" not in html
    assert "someone else" not in html


def test_wallet_ledger_is_paginated(client):
    user = UserFactory()
    for n in range(30):
        wallet_debit(wallet_id=user.wallet.pk, amount=Decimal("0.0001"), description=f"debit {n}")
    ids = list(
        CreditTransaction.objects.filter(wallet__user=user).order_by("-id").values_list("id", flat=True)
    )
    client.force_login(user)
    first = client.get("/wallet/").content.decode()
    assert _rows(first) == 25
    assert "debit 29" in first
    assert "← Newer" not in first
    assert f'href="?before={ids[24]}"' in first
    second = client.get(f"/wallet/?before={ids[24]}").content.decode()
    assert _rows(second) == 6  # 31 rows: 30 debits and the beta grant
    assert "Beta grant" in second
    assert "debit 4<" in second
    assert "Older →" not in second
    assert f'href="?after={ids[25]}"' in second
    back = client.get(f"/wallet/?after={ids[25]}").content.decode()
    assert _rows(back) == 25
    assert "debit 29" in back
    # Junk cursors show the first page, never an error.
    assert _rows(client.get("/wallet/?before=abc").content.decode()) == 25
    assert _rows(client.get("/wallet/?after=-3").content.decode()) == 25


def test_wallet_chart_data_is_per_day_per_model_for_30_days(client):
    user = UserFactory()
    now = timezone.now()
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.3000"))
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.0450"))
    UsageEventFactory(turn__room__owner=user, model_alias="deepseek", credits_burned=Decimal("0.0750"))
    # Unmetered manager calls burn nothing and are not plotted.
    UsageEventFactory(
        turn__room__owner=user, model_alias="default", purpose="manager", metered=False, credits_burned=0
    )
    old = UsageEventFactory(turn__room__owner=user, model_alias="gemini-pro", credits_burned=Decimal("9"))
    UsageEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=31))
    UsageEventFactory(model_alias="claude-sonnet", credits_burned=Decimal("5"))  # another user
    client.force_login(user)

    html = client.get("/wallet/").content.decode()
    start = html.index('<script id="burn-chart-data" type="application/json">') + len(
        '<script id="burn-chart-data" type="application/json">'
    )
    data = json.loads(html[start : html.index("</script>", start)])
    assert len(data["labels"]) == 30
    assert data["labels"][-1] == timezone.localdate().isoformat()
    series = {dataset["label"]: dataset["data"] for dataset in data["datasets"]}
    assert set(series) == {"deepseek", "gpt-4o"}
    assert series["gpt-4o"][-1] == "0.3450"
    assert series["deepseek"][-1] == "0.0750"
    assert series["gpt-4o"][:-1] == ["0.0000"] * 29
    assert 'id="burn-chart"' in html
    assert "/static/vendor/chartjs-4.6.1/chart.umd.min.js" in html


def test_wallet_without_usage_shows_no_chart_script(client):
    client.force_login(UserFactory())
    html = client.get("/wallet/").content.decode()
    assert "No credits burned in the last 30 days" in html
    assert "chart.umd.min.js" not in html


def test_usage_daily_by_model_fills_days_and_excludes_window_edges():
    user = UserFactory()
    today = timezone.localdate()
    event = UsageEventFactory(turn__room__owner=user, credits_burned=Decimal("1.5000"))
    UsageEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=29))
    burn = usage_daily_by_model(user=user, days=30, today=today)
    assert burn.days[0] == today - timedelta(days=29)
    assert burn.series["gpt-4o"][0] == Decimal("1.5000")
    assert sum(burn.series["gpt-4o"]) == Decimal("1.5000")
    assert usage_daily_by_model(user=user, days=29, today=today).series == {}


def test_vendored_chart_library_is_served_by_whitenoise(client):
    response = client.get("/static/vendor/chartjs-4.6.1/chart.umd.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body.startswith(b"/*!\n * Chart.js v4.6.1")
    assert client.get("/static/css/pantheon.css").status_code == 200


def test_ledger_counts_match_the_database(client):
    user = UserFactory()
    client.force_login(user)
    html = client.get("/wallet/").content.decode()
    assert _rows(html) == CreditTransaction.objects.filter(wallet__user=user).count() == 1
