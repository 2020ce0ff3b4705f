"""chat.tools: file_read, file_parse and web_search (against a local Tavily-protocol server)."""

from __future__ import annotations

import json

import pytest

from chat.models import ToolCallEvent
from chat.tools import tools_for_turn, web_search
from chat.tools.base import ToolError
from chat.tools.file_parse import make_tool as make_file_parse
from chat.tools.file_read import make_tool as make_file_read
from tests.chat.conftest import FAKE_TAVILY_KEY
from tests.chat.helpers import upload
from tests.factories import RoomFactory
from tests.support.pdf import pdf_with_text

pytestmark = pytest.mark.django_db


def run(tool, **arguments) -> dict:
    return json.loads(tool.run(arguments))


def test_file_read_returns_the_users_own_text(user):
    uploaded = upload(user, "notes.txt", "Ünïcode notes\nline two".encode())

    result = run(make_file_read(user_id=user.pk), file_id=uploaded.pk)

    assert result == {
        "file_id": uploaded.pk,
        "name": "notes.txt",
        "content_type": "text/plain",
        "text": "Ünïcode notes\nline two",
        "truncated": False,
    }


def test_file_read_truncates_long_files(user, settings):
    settings.FILE_READ_MAX_CHARS = 10
    uploaded = upload(user, "long.txt", b"x" * 50)

    result = run(make_file_read(user_id=user.pk), file_id=uploaded.pk)

    assert result["text"] == "x" * 10 and result["truncated"] is True


def test_file_tools_never_read_another_users_file(user, other_user):
    theirs = upload(other_user, "secret.txt", b"their secret")

    for tool in (make_file_read(user_id=user.pk), make_file_parse(user_id=user.pk)):
        with pytest.raises(ToolError) as error:
            tool.run({"file_id": theirs.pk})
        assert error.value.code == "not_found"
        with pytest.raises(ToolError) as error:
            tool.run({"file_id": 10**9})
        assert error.value.code == "not_found"
        with pytest.raises(ToolError) as error:
            tool.run({"file_id": "seven"})
        assert error.value.code == "bad_arguments"


def test_file_parse_normalizes_csv_to_header_and_rows(user):
    uploaded = upload(user, "sales.csv", b"region;amount\nnorth;10\nsouth;7\n", "text/csv")

    result = run(make_file_parse(user_id=user.pk), file_id=uploaded.pk)

    assert result["header"] == ["region", "amount"]
    assert result["rows"] == [["north", "10"], ["south", "7"]]
    assert result["row_count"] == 2


def test_file_parse_reads_json_text_and_pdf(user):
    as_json = upload(user, "data.json", b'{"a": [1, 2]}', "application/json")
    as_text = upload(user, "plain.md", b"# Title\nbody", "text/markdown")
    as_pdf = upload(user, "report.pdf", pdf_with_text("Revenue grew 12%"), "application/pdf")
    tool = make_file_parse(user_id=user.pk)

    assert run(tool, file_id=as_json.pk)["data"] == {"a": [1, 2]}
    assert run(tool, file_id=as_text.pk)["lines"] == ["# Title", "body"]
    assert run(tool, file_id=as_pdf.pk)["pages"] == ["Revenue grew 12%"]
    assert run(make_file_read(user_id=user.pk), file_id=as_pdf.pk)["text"] == "Revenue grew 12%"


@pytest.mark.parametrize(
    ("name", "data", "content_type", "code"),
    [
        # Unreadable at upload: both tools say so.
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf", "unreadable"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "text/plain", "unreadable"),
        # Readable text that is not what its type says: file_parse says so.
        ("bad.json", b"{not json", "application/json", "bad_format"),
    ],
)
def test_bad_formats_are_tool_errors(user, name, data, content_type, code):
    uploaded = upload(user, name, data, content_type)

    with pytest.raises(ToolError) as error:
        make_file_parse(user_id=user.pk).run({"file_id": uploaded.pk})

    assert error.value.code == code
    if code == "unreadable":
        with pytest.raises(ToolError) as error:
            make_file_read(user_id=user.pk).run({"file_id": uploaded.pk})
        assert error.value.code == "unreadable" and name in error.value.detail


def test_web_search_is_offered_only_with_a_key(user, settings):
    assert [tool.name for tool in tools_for_turn(user_id=user.pk)] == ["file_read", "file_parse"]
    settings.TAVILY_API_KEY = "tvly-x"
    assert [tool.name for tool in tools_for_turn(user_id=user.pk)] == [
        "file_read",
        "file_parse",
        "web_search",
    ]


def test_web_search_sends_the_key_as_bearer_header_never_in_the_body(tavily_server):
    result = run(web_search.make_tool(), query="pantheon credits")

    assert result["results"][0]["title"] == "Result for pantheon credits"
    [request] = tavily_server.requests
    assert request["path"] == "/search"
    assert request["headers"]["authorization"] == f"Bearer {FAKE_TAVILY_KEY}"
    assert "api_key" not in request["body"]
    assert FAKE_TAVILY_KEY.encode() not in request["raw"]
    assert request["body"]["query"] == "pantheon credits"


def test_a_rejected_search_is_a_tool_error(tavily_server, settings):
    settings.TAVILY_API_KEY = "tvly-wrong-key"

    with pytest.raises(ToolError) as error:
        web_search.make_tool().run({"query": "anything"})

    assert error.value.code == "search_failed"


def test_a_turn_using_web_search_and_file_read_records_both_tool_events(api, user, tavily_server):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = upload(user, "notes.txt", b"The launch is on Friday.")

    response = api.post(
        f"/api/v1/rooms/{room.pk}/turns/",
        {"content": "Search the latest news and compare with my notes", "files": [notes.pk]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert [(t["tool_name"], t["status"]) for t in body["tool_calls"]] == [
        ("file_read", "ok"),
        ("web_search", "ok"),
    ]
    events = ToolCallEvent.objects.filter(turn_id=body["id"]).order_by("id")
    assert [(e.tool_name, e.status, e.user_id, e.model_alias) for e in events] == [
        ("file_read", "ok", user.pk, "gpt-4o"),
        ("web_search", "ok", user.pk, "gpt-4o"),
    ]
    assert events[0].arguments == {"file_id": notes.pk}
    # The agent saw both results: its answer quotes them.
    answer = body["messages"][1]["content"]
    assert "The launch is on Friday." in answer and "Pantheon search result snippet." in answer
    assert len(tavily_server.requests) == 1
    assert len(body["usage"]) == 2  # tool-call round, then the answer


def test_a_tool_error_is_recorded_and_the_turn_still_succeeds(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    broken = upload(user, "broken.txt", "caf\xe9".encode("latin-1"))

    response = api.post(
        f"/api/v1/rooms/{room.pk}/turns/", {"content": "Read it", "files": [broken.pk]}, format="json"
    )

    assert response.status_code == 201
    [event] = ToolCallEvent.objects.filter(turn_id=response.json()["id"])
    assert event.status == "error" and "unreadable" in event.error and "not UTF-8" in event.error
