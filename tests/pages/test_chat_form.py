"""The chat page without JavaScript: the composer is a real form, and each turn is a fragment.

Posting the composer to the room page runs the turn (offline model) through the
turn service and redirects back (POST/redirect/GET); refusals come back as
messages with the draft kept. `GET /rooms/<room>/turns/<turn>/` answers the
turn alone, rendered by the same `_turn.html` the page includes.
"""

from __future__ import annotations

import html
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import CreditTransaction, UsageEvent
from billing.services import wallet_adjust
from chat.markdown import render_markdown
from chat.models import Message, Turn, UploadedFile
from tests.factories import RoomFactory, TurnFactory, UserFactory
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db

HIDDEN_RE = r'<input type="hidden" name="{}" value="([^"]+)">'


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def composer_fields(client: Client, room) -> dict[str, str]:
    """The hidden fields of the room page's form, as a browser would send them."""
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    return {
        name: re.search(HIDDEN_RE.format(name), page).group(1)
        for name in ("csrfmiddlewaretoken", "idempotency_key")
    }


def post_turn(client: Client, room, **data):
    fields = composer_fields(client, room)
    return client.post(f"/rooms/{room.pk}/", {**fields, **data})


def flash_errors(page: str) -> list[str]:
    return [
        html.unescape(text)
        for text in re.findall(r'<li class="flash__item flash__item--error">(.*?)</li>', page, re.S)
    ]


class Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        self.handlers += [f"{tag}[{name}]" for name in names if name.startswith("on")]
        self._in_script_without_src = tag == "script" and "src" not in names

    def handle_data(self, data):
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        self._in_script_without_src = False


def test_the_composer_is_a_plain_form_posting_to_the_room(client):
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    client.force_login(user)
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    form = re.search(r'<form id="composer"[^>]*>', page, re.S).group(0)
    assert 'method="post"' in form
    assert f'action="/rooms/{room.pk}/"' in form
    assert 'enctype="multipart/form-data"' in form
    # What chat.js reads: the API it streams from, the cancel endpoint, the fragment URLs.
    assert f'data-turns-url="/api/v1/rooms/{room.pk}/turns/"' in form
    assert f'data-cancel-url="/api/v1/rooms/{room.pk}/turns/cancel"' in form
    assert f'data-fragments-url="/rooms/{room.pk}/turns/"' in form
    assert re.search(HIDDEN_RE.format("csrfmiddlewaretoken"), page)
    assert re.search(HIDDEN_RE.format("idempotency_key"), page)
    assert '<textarea id="composer-content" name="content"' in page
    assert '<select id="composer-model" name="model_alias">' in page
    assert 'name="files" multiple' in page
    # Stop exists only for chat.js; without JavaScript it stays hidden.
    assert (
        '<button type="button" id="composer-stop" class="button button--secondary" hidden>Stop</button>'
        in page
    )
    # Ready for a strict Content-Security-Policy: no inline script, no inline event handler.
    markup = Markup()
    markup.feed(page)
    assert markup.inline_scripts == 0
    assert markup.handlers == []
    # Each page gets a fresh key for the form, so two visits never collide.
    assert (
        composer_fields(client, room)["idempotency_key"] != composer_fields(client, room)["idempotency_key"]
    )


def test_posting_the_form_runs_a_turn_and_redirects_back_to_it():
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    client = csrf_client(user)

    response = post_turn(client, room, content="Compare: what is a **prime** number?", model_alias="")

    turn = Turn.objects.get(room=room)
    assert response.status_code == 302
    assert response["Location"] == f"/rooms/{room.pk}/#turn-{turn.pk}"
    answers = list(turn.messages.filter(role="assistant").order_by("position"))
    assert {m.model_alias for m in answers} == {"gpt-4o", "deepseek"}  # the manager chose both
    user.wallet.refresh_from_db()
    assert turn.credits_burned > 0
    assert user.wallet.balance == Decimal("500.0000") - turn.credits_burned

    page = client.get(response["Location"]).content.decode()
    assert f'<article class="turn" id="turn-{turn.pk}"' in page
    for answer in answers:
        assert render_markdown(answer.content) in page  # the answer, rendered as Markdown
    assert f"Turn total: <strong>{turn.credits_burned}</strong>" in page
    assert f'data-testid="header-balance">{user.wallet.balance}<' in page
    assert flash_errors(page) == []


def test_the_form_needs_its_csrf_token():
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    response = client.post(f"/rooms/{room.pk}/", {"content": "Hello"})
    assert response.status_code == 403
    assert not Turn.objects.exists()


def test_a_resubmitted_form_replays_the_turn_and_charges_once():
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    fields = composer_fields(client, room)

    first = client.post(f"/rooms/{room.pk}/", {**fields, "content": "Hello"})
    again = client.post(f"/rooms/{room.pk}/", {**fields, "content": "Hello"})  # a double click

    turn = Turn.objects.get(room=room)
    assert first.status_code == again.status_code == 302
    assert first["Location"] == again["Location"] == f"/rooms/{room.pk}/#turn-{turn.pk}"
    metered = UsageEvent.objects.filter(turn=turn, metered=True).count()
    assert metered >= 1
    assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == metered


def test_the_chosen_agent_answers_alone():
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    client = csrf_client(user)
    post_turn(client, room, content="Just you, please", model_alias="deepseek")
    turn = Turn.objects.get(room=room)
    assert list(turn.messages.filter(role="assistant").values_list("model_alias", flat=True)) == ["deepseek"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"content": "   "}, "Message: Write a message."),
        ({"content": "x" * 11}, "Message: A message has at most 10 characters."),
        ({"content": "Hi", "model_alias": "nope"}, "Who answers: Unknown model alias 'nope'."),
        ({"content": "Hi", "model_alias": "claude-sonnet"}, "Who answers: claude-sonnet is not an agent"),
    ],
)
def test_validation_errors_come_back_as_messages_with_the_draft_kept(settings, data, message):
    settings.TURN_MAX_CONTENT_CHARS = 10
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    client = csrf_client(user)

    response = post_turn(client, room, **data)

    assert response.status_code == 302
    assert response["Location"] == f"/rooms/{room.pk}/"
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    (error,) = flash_errors(page)
    assert error.startswith(message)
    textarea = re.search(r'<textarea id="composer-content"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    assert html.unescape(textarea) == data["content"]
    assert not Turn.objects.exists()
    # The draft is given back once, then forgotten.
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    assert re.search(r'<textarea id="composer-content"[^>]*></textarea>', page)
    assert flash_errors(page) == []


def test_a_damaged_form_key_is_refused():
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    fields = composer_fields(client, room)
    client.post(f"/rooms/{room.pk}/", {**fields, "idempotency_key": "x" * 256, "content": "Hello"})
    assert flash_errors(client.get(f"/rooms/{room.pk}/").content.decode()) == [
        "The form was damaged: reload the page and send your message again."
    ]
    assert not Turn.objects.exists()


def test_the_chosen_agent_is_kept_with_the_draft(settings):
    settings.TURN_MAX_CONTENT_CHARS = 10
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    client = csrf_client(user)
    post_turn(client, room, content="far too long for ten", model_alias="deepseek")
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    assert '<option value="deepseek" selected>deepseek</option>' in page


def test_too_few_credits_is_a_message_and_nothing_is_charged(settings):
    settings.CREDIT_ENFORCEMENT = "enforce"
    user = UserFactory()
    room = RoomFactory(owner=user)
    wallet = user.wallet
    wallet_adjust(wallet_id=wallet.pk, amount=Decimal("0.0100") - wallet.balance, description="test")
    client = csrf_client(user)

    response = post_turn(client, room, content="Expensive question")

    assert response["Location"] == f"/rooms/{room.pk}/"
    (error,) = flash_errors(client.get(f"/rooms/{room.pk}/").content.decode())
    assert error.startswith("This turn may cost up to ") and "0.0100 are available" in error
    assert "more credits are needed" in error
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("0.0100")
    assert not Turn.objects.exists()


def test_a_provider_failure_is_a_message_and_nothing_is_charged(settings):
    settings.LLM_MAX_RETRIES = 0
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    client = csrf_client(user)
    with FakeOpenAI() as fake:
        settings.OPENAI_API_KEY = "sk-test-local"
        settings.OPENAI_BASE_URL = fake.base_url
        fake.fail_models = {"gpt-4o"}
        response = post_turn(client, room, content="Hello there")

    assert response["Location"] == f"/rooms/{room.pk}/"
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    (error,) = flash_errors(page)
    assert error.startswith("The model provider for gpt-4o failed")
    assert "Traceback" not in page
    assert not Turn.objects.exists()
    assert not CreditTransaction.objects.filter(wallet__user=user, kind="debit").exists()


def test_files_go_up_with_the_form_and_show_by_name():
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    upload = SimpleUploadedFile("prices.csv", b"model,multiplier\ngpt-4o,2\n", content_type="text/csv")

    response = post_turn(client, room, content="Summarise the attached file", files=[upload])

    turn = Turn.objects.get(room=room)
    uploaded = UploadedFile.objects.get(owner=user)
    assert list(turn.files.all()) == [uploaded]
    page = client.get(response["Location"]).content.decode()
    files = re.search(r'<ul class="bubble__files"[^>]*>(.*?)</ul>', page, re.S).group(1)
    assert '<li class="tag tag--file">prices.csv</li>' in files
    # The offline agent read the file; its tool tag names the file, not its id.
    assert ">file_read: prices.csv</li>" in page


def test_too_many_or_unsupported_files_are_messages(settings):
    settings.TURN_MAX_FILES = 1
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    two = [SimpleUploadedFile(f"{n}.txt", b"hello", content_type="text/plain") for n in "ab"]
    post_turn(client, room, content="Two files", files=two)
    assert flash_errors(client.get(f"/rooms/{room.pk}/").content.decode()) == [
        "Files: Attach at most 1 files."
    ]
    assert not UploadedFile.objects.exists()  # refused before anything was stored

    binary = SimpleUploadedFile("tool.exe", b"MZ\x90\x00", content_type="application/x-msdownload")
    post_turn(client, room, content="A program", files=[binary])
    (error,) = flash_errors(client.get(f"/rooms/{room.pk}/").content.decode())
    assert error.startswith("File: Unsupported file type 'application/x-msdownload'.")
    assert not Turn.objects.exists()


def test_the_form_has_the_turn_rate_limit(settings):
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "turn": "1/minute"}
    user = UserFactory()
    room = RoomFactory(owner=user)
    client = csrf_client(user)
    assert post_turn(client, room, content="First").status_code == 302
    assert client.get(f"/rooms/{room.pk}/").status_code == 200  # reading is not counted
    refused = post_turn(client, room, content="Second")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert Turn.objects.filter(room=room).count() == 1


def test_posting_to_another_users_room_is_404_and_runs_nothing():
    room = RoomFactory(title="Secret")
    intruder = UserFactory()
    client = csrf_client(intruder)
    own = RoomFactory(owner=intruder)
    fields = composer_fields(client, own)
    response = client.post(f"/rooms/{room.pk}/", {**fields, "content": "Hello"})
    assert response.status_code == 404
    assert not Turn.objects.exists()


def test_posting_signed_out_goes_to_log_in(client):
    room = RoomFactory()
    response = client.post(f"/rooms/{room.pk}/", {"content": "Hello"})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert not Turn.objects.exists()


# --- the turn fragment ---


def run_turn(user, room, content: str = "What is 2+2?") -> Turn:
    client = csrf_client(user)
    post_turn(client, room, content=content)
    return Turn.objects.filter(room=room).latest("id")


def test_the_fragment_is_the_turn_exactly_as_the_page_renders_it(client):
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    turn = run_turn(user, room)
    client.force_login(user)

    response = client.get(f"/rooms/{room.pk}/turns/{turn.pk}/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert "private" in response["Cache-Control"]
    fragment = response.content.decode().strip()
    assert fragment.startswith(f'<article class="turn" id="turn-{turn.pk}" data-testid="turn"')
    assert fragment.endswith("</article>")
    assert fragment.count("<article") == 1
    for absent in ("<html", "<body", "composer", "<script", "site-header"):
        assert absent not in fragment
    assert fragment.count('data-testid="answer"') == 2
    assert f"Turn total: <strong>{turn.credits_burned}</strong>" in fragment
    # The page includes the very same markup.
    page = client.get(f"/rooms/{room.pk}/").content.decode()
    assert fragment in page


def test_another_users_turn_is_404(client):
    owner = UserFactory()
    room = RoomFactory(owner=owner, title="Secret")
    turn = run_turn(owner, room, content="my secret question")
    other_room = RoomFactory(owner=owner)
    client.force_login(UserFactory())
    response = client.get(f"/rooms/{room.pk}/turns/{turn.pk}/")
    assert response.status_code == 404
    assert b"my secret question" not in response.content

    client.force_login(owner)
    assert client.get(f"/rooms/{room.pk}/turns/{turn.pk}/").status_code == 200
    assert client.get(f"/rooms/{other_room.pk}/turns/{turn.pk}/").status_code == 404  # not that room's
    assert client.get(f"/rooms/{room.pk}/turns/999999/").status_code == 404
    assert client.post(f"/rooms/{room.pk}/turns/{turn.pk}/").status_code == 405


def test_the_fragment_needs_a_signed_in_user(client):
    turn = TurnFactory()
    response = client.get(f"/rooms/{turn.room_id}/turns/{turn.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_page_reads_files_and_tools_in_a_fixed_number_of_queries(client):
    user = UserFactory()
    room = RoomFactory(owner=user)
    client.force_login(user)

    def add_turn_with_file(n: int) -> None:
        turn = TurnFactory(room=room, content=f"question {n}")
        Message.objects.create(turn=turn, position=0, role="user", content=f"question {n}")
        Message.objects.create(turn=turn, position=1, role="assistant", model_alias="gpt-4o", content="ok")
        uploaded = UploadedFile.objects.create(
            owner=user, file=f"uploads/x/{n}.txt", name=f"notes-{n}.txt", size=5, content_type="text/plain"
        )
        turn.files.add(uploaded)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            page = client.get(f"/rooms/{room.pk}/").content.decode()
        assert page.count('class="tag tag--file"') == Turn.objects.filter(room=room).count()
        return len(captured.captured_queries)

    add_turn_with_file(0)
    queries()  # the first request also loads the pricing cache
    one = queries()
    for n in range(1, 5):
        add_turn_with_file(n)
    assert queries() == one
