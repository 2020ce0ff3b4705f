"""Room list, room creation and the chat page (server-rendered part)."""

from decimal import Decimal

import pytest

from billing import meter
from billing.models import ModelPricing
from chat.models import Message, Room, ToolCallEvent
from tests.factories import RoomFactory, TurnFactory, UsageEventFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/rooms/", "/rooms/1/"])
def test_room_pages_require_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_room_list_shows_only_own_rooms(client):
    user = UserFactory()
    RoomFactory(owner=user, title="Mine A", agents=["gpt-4o", "deepseek"])
    RoomFactory(owner=user, title="Mine B")
    RoomFactory(title="Not mine")
    client.force_login(user)
    html = client.get("/rooms/").content.decode()
    assert "Mine A" in html and "Mine B" in html
    assert "Not mine" not in html
    assert html.index("Mine B") < html.index("Mine A")  # newest first


def test_create_form_offers_the_active_pricing_table_without_default(client):
    ModelPricing.objects.filter(model_alias="deepseek").update(multiplier=Decimal("0.7500"))
    meter.reload_pricing_cache()
    client.force_login(UserFactory())
    html = client.get("/rooms/").content.decode()
    for alias, shown in [
        ("deepseek", "×0.75"),
        ("gpt-4o", "×2"),
        ("claude-sonnet", "×1.5"),
        ("gemini-flash", "×0.8"),
    ]:
        assert f'value="{alias}"' in html
        assert f"<span>{alias}</span>" in html
        assert f'<span class="choice__multiplier">{shown}</span>' in html
    assert 'value="default"' not in html


def test_create_room_with_two_agents(client):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/rooms/", {"title": "Duel", "agents": ["gpt-4o", "claude-sonnet"]})
    room = Room.objects.get(owner=user)
    assert response.status_code == 302
    assert response["Location"] == f"/rooms/{room.pk}/"
    assert room.title == "Duel"
    assert sorted(room.agents) == ["claude-sonnet", "gpt-4o"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"title": "No agents"}, "This field is required."),
        ({"title": "Bad", "agents": ["default"]}, "Select a valid choice. default is not one of"),
        ({"title": "", "agents": ["gpt-4o"]}, "This field is required."),
    ],
)
def test_create_room_rejects_bad_input(client, data, message):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/rooms/", data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Room.objects.filter(owner=user).exists()


def test_another_users_room_is_404(client):
    room = RoomFactory(title="Secret")
    client.force_login(UserFactory())
    response = client.get(f"/rooms/{room.pk}/")
    assert response.status_code == 404
    assert b"Secret" not in response.content
    assert client.get("/rooms/999999/").status_code == 404


def test_chat_page_shows_the_conversation_with_costs(client):
    user = UserFactory()
    room = RoomFactory(owner=user, title="Duel", agents=["gpt-4o", "deepseek"])
    turn = TurnFactory(room=room, content="What is 2+2?", credits_burned=Decimal("0.3300"))
    Message.objects.create(turn=turn, position=0, role="user", content="What is 2+2?")
    Message.objects.create(turn=turn, position=1, role="assistant", model_alias="gpt-4o", content="Four.")
    Message.objects.create(turn=turn, position=2, role="assistant", model_alias="deepseek", content="4")
    UsageEventFactory(
        turn=turn, model_alias="default", purpose="manager", metered=False,
        input_tokens=40, output_tokens=5, multiplier=Decimal(1), credits_burned=Decimal(0),
    )  # fmt: skip
    # gpt-4o used a tool, so it made two calls; the page sums them.
    UsageEventFactory(
        turn=turn, model_alias="gpt-4o", input_tokens=50, output_tokens=10, credits_burned=Decimal("0.1200")
    )
    UsageEventFactory(
        turn=turn, model_alias="gpt-4o", input_tokens=60, output_tokens=15, credits_burned=Decimal("0.1500")
    )
    UsageEventFactory(
        turn=turn, model_alias="deepseek", provider_model="offline:deepseek", input_tokens=100,
        output_tokens=20, multiplier=Decimal("0.5"), credits_burned=Decimal("0.0600"),
    )  # fmt: skip
    ToolCallEvent.objects.create(
        user=user, room=room, turn=turn, model_alias="gpt-4o", tool_name="web_search",
        arguments={"query": "2+2"}, status="ok",
    )  # fmt: skip
    client.force_login(user)

    response = client.get(f"/rooms/{room.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('data-testid="turn"') == 1
    assert html.count('data-testid="answer"') == 2
    assert "What is 2+2?" in html and "Four." in html
    gpt = html[html.index('data-model="gpt-4o"') : html.index('data-model="deepseek"')]
    assert "110 in · 25 out tokens" in gpt
    assert "2 calls" in gpt
    assert 'data-testid="answer-credits">0.2700<' in gpt
    assert "web_search: 2+2" in gpt
    deepseek = html[html.index('data-model="deepseek"') :]
    assert "offline:deepseek" in deepseek
    assert "×0.5" in deepseek
    assert 'data-testid="answer-credits">0.0600<' in deepseek
    assert "routing by default · 40 in · 5 out · unmetered" in html
    assert "Turn total: <strong>0.3300</strong>" in html
    # The composer posts to this room's turns API; the model picker lists the agents.
    assert f'data-turns-url="/api/v1/rooms/{room.pk}/turns/"' in html
    assert '<option value="deepseek">deepseek</option>' in html
    assert "/static/js/chat.js" in html


def test_chat_page_escapes_model_output(client):
    user = UserFactory()
    room = RoomFactory(owner=user)
    turn = TurnFactory(room=room, content="<b>hi</b>")
    Message.objects.create(turn=turn, position=0, role="user", content="<b>hi</b>")
    Message.objects.create(
        turn=turn, position=1, role="assistant", model_alias="gpt-4o", content="<script>alert(1)</script>"
    )
    client.force_login(user)
    html = client.get(f"/rooms/{room.pk}/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_chat_page_renders_answers_as_markdown_and_questions_as_text(client):
    user = UserFactory()
    room = RoomFactory(owner=user)
    turn = TurnFactory(room=room, content="Give me **a table**")
    Message.objects.create(turn=turn, position=0, role="user", content="Give me **a table**")
    Message.objects.create(
        turn=turn,
        position=1,
        role="assistant",
        model_alias="gpt-4o",
        content=(
            "**Sure**:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nx < y\n```\n\n<img src=x onerror=alert(1)>"
        ),
    )
    client.force_login(user)
    html = client.get(f"/rooms/{room.pk}/").content.decode()
    answer = html[html.index('data-testid="answer-body"') :]
    assert "<strong>Sure</strong>" in answer
    assert "<td>1</td>" in answer
    assert "<pre><code>x &lt; y\n</code></pre>" in answer
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in answer
    # What the user typed is shown as typed, never rendered.
    assert '<div class="bubble__body">Give me **a table**</div>' in html


def test_create_room_shows_the_room_services_refusal(client, settings):
    settings.MAX_AGENTS_PER_ROOM = 1
    user = UserFactory()
    client.force_login(user)
    response = client.post("/rooms/", {"title": "Crowd", "agents": ["gpt-4o", "deepseek"]})
    assert response.status_code == 200
    assert "A room has at most 1 agents." in response.content.decode()
    assert not Room.objects.filter(owner=user).exists()


def test_chat_page_shows_the_latest_turns_oldest_first(client, monkeypatch):
    from chat import views

    monkeypatch.setattr(views, "CHAT_PAGE_TURNS", 2)
    user = UserFactory()
    room = RoomFactory(owner=user)
    for text in ("first question", "second question", "third question"):
        turn = TurnFactory(room=room, content=text)
        Message.objects.create(turn=turn, position=0, role="user", content=text)
    client.force_login(user)
    html = client.get(f"/rooms/{room.pk}/").content.decode()
    assert "first question" not in html
    assert html.index("second question") < html.index("third question")
    assert "Showing the latest 2 turns" in html


def _formula_turn(user, *calls, title="Why"):
    """A one-agent turn whose gpt-4o answer made these (input, output, multiplier, credits, source) calls."""
    room = RoomFactory(owner=user, title=title, agents=["gpt-4o"])
    turn = TurnFactory(room=room, content="Hi")
    Message.objects.create(turn=turn, position=0, role="user", content="Hi")
    Message.objects.create(turn=turn, position=1, role="assistant", model_alias="gpt-4o", content="Hello.")
    for input_tokens, output_tokens, multiplier, credits_burned, source in calls:
        UsageEventFactory(
            turn=turn, input_tokens=input_tokens, output_tokens=output_tokens,
            multiplier=Decimal(multiplier), credits_burned=Decimal(credits_burned), usage_source=source,
        )  # fmt: skip
    return room


def _answer_cost(html: str) -> str:
    start = html.index('data-testid="answer-cost"')
    return html[start : html.index("</details>", start)]


def test_answer_cost_expands_into_its_formula_with_its_own_numbers(client):
    """The issue's example: a one-line question that carried 1,534 tokens of history cost 3.13."""
    user = UserFactory()
    room = _formula_turn(user, (1534, 31, "2.0000", "3.1300", "provider"))
    client.force_login(user)
    cost = _answer_cost(client.get(f"/rooms/{room.pk}/").content.decode())
    # A <details> (works without JavaScript), closed until asked; the summary is the cost line.
    assert cost.startswith('data-testid="answer-cost">') and "<summary" in cost
    assert "1534 in · 31 out tokens" in cost
    assert 'data-testid="answer-credits">3.1300<' in cost
    assert (
        '<span data-testid="formula-input">1534</span> input + <span data-testid="formula-output">31</span>'
        in cost
    )
    assert "output = 1565 tokens" in cost
    assert "1565 ÷ 1000 × 1 base price × 2 multiplier = <strong>3.1300</strong> credits" in cost
    # The split of input tokens is not stored, and the page says so instead of inventing one.
    assert "Pantheon records only each call's total, not how it splits" in cost
    assert "Rounded to 0.0001 credit, half up." in cost
    assert "estimated" not in cost
    assert 'data-testid="formula-sum"' not in cost  # one call: nothing to add up
    assert 'data-testid="formula-mismatch"' not in cost


def test_formula_of_an_answer_with_several_calls_adds_them_up(client):
    user = UserFactory()
    # Two tool rounds; the second was cut short and counted by Pantheon (estimated).
    room = _formula_turn(
        user, (50, 10, "2.0000", "0.1200", "provider"), (60, 15, "2.0000", "0.1500", "estimated")
    )
    client.force_login(user)
    cost = _answer_cost(client.get(f"/rooms/{room.pk}/").content.decode())
    assert "110 in · 25 out tokens (estimated)" in cost
    assert cost.count('data-testid="formula-call"') == 2
    assert "Call 1" in cost and "Call 2" in cost
    assert "60 ÷ 1000 × 1 base price × 2 multiplier = <strong>0.1200</strong> credits" in cost
    assert "75 ÷ 1000 × 1 base price × 2 multiplier = <strong>0.1500</strong> credits" in cost
    assert cost.count('data-testid="formula-estimated"') == 1
    first, second = cost.split('data-testid="formula-call"')[1:]
    assert "formula-estimated" not in first and "formula-estimated" in second
    assert "Estimated: the provider did not report the usage" in cost
    assert "0.1200 + 0.1500 = <strong>0.2700</strong> credits (each call is rounded on its own)" in cost


def test_formula_rounds_with_the_meter_half_up(client):
    user = UserFactory()
    # 1 token × 0.15 = 0.00015 → 0.0002 (half up, in billing.meter.credits_for).
    room = _formula_turn(user, (1, 0, "0.1500", "0.0002", "provider"))
    client.force_login(user)
    cost = _answer_cost(client.get(f"/rooms/{room.pk}/").content.decode())
    assert "1 ÷ 1000 × 1 base price × 0.15 multiplier = <strong>0.0002</strong> credits" in cost


def test_formula_says_when_todays_base_price_no_longer_gives_the_charge(client, settings):
    """The base price is not stored per call: the charge shown stays what was debited."""
    settings.CREDITS_PER_1K_TOKENS = Decimal("1.5")
    user = UserFactory()
    room = _formula_turn(user, (1534, 31, "2.0000", "3.1300", "provider"))
    client.force_login(user)
    cost = _answer_cost(client.get(f"/rooms/{room.pk}/").content.decode())
    assert 'data-testid="answer-credits">3.1300<' in cost
    assert "1565 ÷ 1000 × 1.5 base price × 2 multiplier = <strong>4.6950</strong> credits" in cost
    assert "Charged <strong>3.1300</strong> when it ran: the base price was different then" in cost


def test_turn_fragment_has_the_same_formula(client):
    user = UserFactory()
    room = _formula_turn(user, (1534, 31, "2.0000", "3.1300", "provider"))
    turn = room.turns.get()
    client.force_login(user)
    fragment = client.get(f"/rooms/{room.pk}/turns/{turn.pk}/").content.decode()
    assert "1565 ÷ 1000 × 1 base price × 2 multiplier = <strong>3.1300</strong> credits" in fragment


def test_rooms_page_shows_the_base_price_next_to_the_multipliers(client, settings):
    client.force_login(UserFactory())
    html = client.get("/rooms/").content.decode()
    assert (
        'data-testid="base-price">Base price <strong>1</strong> credit per 1,000 tokens (input + output), '
        "times the model's multiplier:</p>"
    ) in html
    assert html.index('data-testid="base-price"') < html.index('class="choice__multiplier"')
    settings.CREDITS_PER_1K_TOKENS = Decimal("2.5000")
    html = client.get("/rooms/").content.decode()
    assert "Base price <strong>2.5</strong> credits per 1,000 tokens" in html
