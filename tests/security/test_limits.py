"""Size limits, each through HTTP: request body, turn content, agents per room, files per turn, uploads.

Every refusal is JSON with the project's `{"error", "detail"}` shape and
writes nothing; a request at the limit is accepted.
"""

from __future__ import annotations

import bz2
import json

import pytest
import requests
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from billing.models import CreditTransaction, ModelPricing, PricingChange
from chat.models import Room, Turn, UploadedFile
from tests.factories import RoomFactory, UserFactory
from tests.support.clients import live_token, logged_in


def _assert_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.content
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    return body


# --- request body size (DATA_UPLOAD_MAX_MEMORY_SIZE) ------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_json_body_over_the_limit_is_413_json_on_every_door(live_server):
    user = UserFactory()
    token = live_token(live_server.url, user)
    auth = {"Authorization": f"Bearer {token}"}
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert limit == 1024 * 1024  # the default
    room = RoomFactory(owner=user)
    too_big = {"title": "x" * limit, "agents": ["gpt-4o"]}

    for path, headers in [
        ("/api/v1/rooms/", auth),
        (f"/api/v1/rooms/{room.pk}/turns/", auth),
        ("/api/v1/auth/token", {}),
        ("/api/v1/auth/register", {}),
    ]:
        response = requests.post(f"{live_server.url}{path}", json=too_big, headers=headers, timeout=30)
        body = _assert_error(response, 413, "request_too_large")
        assert str(limit) in body["detail"], path

    assert Room.objects.count() == 1
    assert Turn.objects.count() == 0


@pytest.mark.django_db
def test_a_body_just_under_the_limit_is_read_and_validated(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    body = json.dumps({"title": "x" * 1900, "agents": ["gpt-4o"]})
    assert len(body) < 2000
    response = api.post("/api/v1/rooms/", body, content_type="application/json")
    # Read and refused for its content (titles have 200 characters at most), not for its size.
    assert _assert_error(response, 400, "invalid")["detail"]["title"]


@pytest.mark.django_db
def test_too_many_form_fields_is_a_400_not_a_500(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"field{i}": "x" for i in range(20)}
    fields["file"] = SimpleUploadedFile("a.txt", b"hello", content_type="text/plain")
    response = api.post("/api/v1/files/", fields, format="multipart")
    _assert_error(response, 400, "bad_request")
    assert UploadedFile.objects.count() == 0


# --- turn content, files per turn ----------------------------------------------------------


@pytest.mark.django_db
def test_turn_content_has_a_length_limit(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    url = f"/api/v1/rooms/{room.pk}/turns/"
    limit = django_settings.TURN_MAX_CONTENT_CHARS
    assert limit == 8000

    refused = api.post(url, {"content": "a" * (limit + 1)}, format="json")
    body = _assert_error(refused, 400, "invalid")
    assert body["detail"]["content"] == [f"A message has at most {limit} characters."]
    assert Turn.objects.count() == 0
    assert not CreditTransaction.objects.filter(kind="debit").exists()

    assert api.post(url, {"content": "a" * limit}, format="json").status_code == 201


@pytest.mark.django_db
def test_a_turn_attaches_at_most_turn_max_files(api, user, settings):
    settings.TURN_MAX_FILES = 2
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    ids = [
        api.post(
            "/api/v1/files/",
            {"file": SimpleUploadedFile(f"n{i}.txt", b"notes", content_type="text/plain")},
            format="multipart",
        ).json()["id"]
        for i in range(3)
    ]
    url = f"/api/v1/rooms/{room.pk}/turns/"
    refused = api.post(url, {"content": "read them", "files": ids}, format="json")
    assert _assert_error(refused, 400, "invalid")["detail"]["files"] == ["Attach at most 2 files."]
    assert api.post(url, {"content": "read them", "files": ids[:2]}, format="json").status_code == 201


# --- agents per room -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_room_invites_at_most_max_agents_per_room(api):
    limit = django_settings.MAX_AGENTS_PER_ROOM
    assert limit == 5
    agents = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "gemini-pro", "deepseek"]

    refused = api.post("/api/v1/rooms/", {"title": "Too many", "agents": agents}, format="json")
    assert _assert_error(refused, 400, "invalid")["detail"]["agents"] == [
        f"A room has at most {limit} agents."
    ]
    assert Room.objects.count() == 0

    accepted = api.post("/api/v1/rooms/", {"title": "Full", "agents": agents[:limit]}, format="json")
    assert accepted.status_code == 201
    assert accepted.json()["agents"] == agents[:limit]


# --- uploads -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upload_over_upload_max_bytes_is_413(api, settings):
    settings.UPLOAD_MAX_BYTES = 1024

    def upload(size: int):
        data = SimpleUploadedFile("data.csv", b"a" * size, content_type="text/csv")
        return api.post("/api/v1/files/", {"file": data}, format="multipart")

    body = _assert_error(upload(1025), 413, "file_too_large")
    assert body["max_bytes"] == 1024
    assert UploadedFile.objects.count() == 0
    assert upload(1024).status_code == 201


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_oversized_upload_is_refused_from_its_content_length_over_http(live_server, settings, tmp_path):
    settings.UPLOAD_MAX_BYTES = 1024
    settings.MEDIA_ROOT = tmp_path / "media"
    user = UserFactory()
    token = live_token(live_server.url, user)
    response = requests.post(
        f"{live_server.url}/api/v1/files/",
        files={"file": ("big.txt", b"a" * (200 * 1024), "text/plain")},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    _assert_error(response, 413, "file_too_large")
    assert UploadedFile.objects.count() == 0


@pytest.mark.django_db
def test_uploads_over_the_upload_rate_are_429_and_store_nothing(api, user, settings):
    from pantheon import throttling

    throttling.reset_counters()
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "upload": "2/day"}

    def upload(index: int):
        data = SimpleUploadedFile(f"n{index}.txt", b"notes", content_type="text/plain")
        return api.post("/api/v1/files/", {"file": data}, format="multipart")

    assert [upload(i).status_code for i in range(2)] == [201, 201]
    stored = _stored_files(settings)
    refused = upload(3)
    _assert_error(refused, 429, "throttled")
    assert 1 <= int(refused["Retry-After"]) <= 86400
    assert UploadedFile.objects.filter(owner=user).count() == 2
    assert _stored_files(settings) == stored
    assert api.get("/api/v1/files/").status_code == 200  # listing is not counted
    throttling.reset_counters()


def _stored_files(settings) -> list:
    return sorted(path for path in settings.MEDIA_ROOT.rglob("*") if path.is_file())


@pytest.mark.django_db
def test_an_upload_over_the_storage_quota_is_413_and_stores_nothing(api, user, settings):
    settings.UPLOAD_QUOTA_BYTES = 1000

    def upload(size: int, name: str):
        data = SimpleUploadedFile(name, b"a" * size, content_type="text/plain")
        return api.post("/api/v1/files/", {"file": data}, format="multipart")

    assert upload(600, "first.txt").status_code == 201
    stored = _stored_files(settings)
    refused = upload(401, "second.txt")
    body = _assert_error(refused, 413, "quota_exceeded")
    assert body["quota_bytes"] == 1000 and body["used_bytes"] == 600
    assert _stored_files(settings) == stored
    assert UploadedFile.objects.filter(owner=user).count() == 1
    assert upload(400, "exactly-full.txt").status_code == 201  # at the quota is allowed
    # Another user's quota is their own.
    other = APIClient()
    other.force_login(UserFactory())
    data = SimpleUploadedFile("theirs.txt", b"a" * 900, content_type="text/plain")
    assert other.post("/api/v1/files/", {"file": data}, format="multipart").status_code == 201


# --- the admin pricing parser ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_compressing_charset_is_refused_by_the_pricing_parser(settings):
    admin = UserFactory()
    settings.ADMIN_USER_IDS = [admin.pk]
    client = logged_in(admin)
    # About 100 bytes that the old parser inflated to 10 MB (ten times DATA_UPLOAD_MAX_MEMORY_SIZE).
    body = bz2.compress(json.dumps({"multiplier": "3.0", "pad": "a" * 10_000_000}).encode())
    assert len(body) < 200
    response = client.patch(
        "/api/v1/admin/pricing/gpt-4o", body, content_type="application/json; charset=bz2_codec"
    )
    _assert_error(response, 400, "parse_error")
    assert ModelPricing.objects.get(model_alias="gpt-4o", pricing_version__is_active=True).multiplier == 2
    assert not PricingChange.objects.exists()
