"""Uploads: local disk by default, S3 against a moto server, one connection per process, limits."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from moto.server import ThreadedMotoServer

from chat import services, storage
from chat.models import UploadedFile
from chat.tools.file_parse import make_tool as make_file_parse
from tests.chat.helpers import db_state
from tests.support.clients import logged_in

BUCKET = "pantheon-test-uploads"


def post_file(client, name: str, data: bytes, content_type: str = "text/plain"):
    return client.post("/api/v1/files/", {"file": SimpleUploadedFile(name, data, content_type=content_type)})


@pytest.mark.django_db
def test_upload_goes_to_local_disk_by_default(api, user, settings):
    response = post_file(api, "report.csv", b"a,b\n1,2\n", "text/csv")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) >= {"id", "name", "size", "content_type"}
    assert (body["name"], body["size"], body["content_type"]) == ("report.csv", 8, "text/csv")
    row = UploadedFile.objects.get(pk=body["id"])
    assert row.owner == user
    on_disk = Path(settings.MEDIA_ROOT) / row.file.name
    assert on_disk.read_bytes() == b"a,b\n1,2\n"
    assert row.file.name.startswith(f"uploads/{user.pk}/") and row.file.name.endswith("/report.csv")


@pytest.mark.django_db
def test_the_content_type_falls_back_to_the_file_extension(api):
    response = post_file(api, "data.json", b"{}", "application/octet-stream")

    assert response.status_code == 201
    assert response.json()["content_type"] == "application/json"


@pytest.mark.django_db
def test_upload_limits_answer_json_errors_and_store_nothing(api, user, settings):
    settings.UPLOAD_MAX_BYTES = 100
    before = db_state(user)

    too_big = post_file(api, "big.txt", b"x" * 101)
    way_too_big = post_file(api, "huge.txt", b"x" * (settings.UPLOAD_MAX_BYTES + 70 * 1024))
    bad_type = post_file(api, "tool.exe", b"MZ", "application/x-msdownload")
    empty = post_file(api, "empty.txt", b"")
    missing = api.post("/api/v1/files/", {}, format="multipart")

    assert too_big.status_code == 413 and too_big.json()["error"] == "file_too_large"
    assert way_too_big.status_code == 413 and way_too_big.json()["error"] == "file_too_large"
    assert bad_type.status_code == 400 and "Unsupported file type" in str(bad_type.json()["detail"])
    assert empty.status_code == 400 and "empty" in str(empty.json()["detail"])
    assert missing.status_code == 400 and missing.json()["error"]
    assert db_state(user) == before
    assert not (Path(settings.MEDIA_ROOT) / "uploads").exists()


@pytest.mark.django_db
def test_files_are_private_to_their_owner(api, user, other_user):
    mine = services.file_upload(
        owner=user, upload=SimpleUploadedFile("a.txt", b"a", content_type="text/plain")
    )
    theirs = services.file_upload(
        owner=other_user, upload=SimpleUploadedFile("b.txt", b"b", content_type="text/plain")
    )

    assert api.get(f"/api/v1/files/{mine.pk}/").status_code == 200
    response = api.get(f"/api/v1/files/{theirs.pk}/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    listed = api.get("/api/v1/files/").json()
    assert [f["id"] for f in listed["results"]] == [mine.pk]
    assert logged_in(other_user).get(f"/api/v1/files/{mine.pk}/").status_code == 404


@pytest.fixture
def moto_s3(settings):
    """A moto S3 server on 127.0.0.1 and the default storage pointed at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "chat.storage.SharedConnectionS3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "access_key": "testing",
                "secret_key": "testing",
                "file_overwrite": True,
                "default_acl": None,
            },
        },
    }
    yield client
    server.stop()


@pytest.mark.django_db
def test_s3_uploads_use_one_connection_across_uploads_and_threads(api, user, moto_s3, monkeypatch):
    created = []
    real_factory = storage.create_s3_connection

    def counting_factory(s3_storage):
        created.append(threading.get_ident())
        return real_factory(s3_storage)

    monkeypatch.setattr(storage, "create_s3_connection", counting_factory)

    # Through the API (request thread) ...
    responses = [post_file(api, f"note{i}.txt", f"note {i}".encode()) for i in range(3)]
    assert [r.status_code for r in responses] == [201, 201, 201]
    # ... and from eight other threads at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(
            pool.map(
                lambda i: storage.upload_storage().save(f"threads/{i}.txt", ContentFile(f"t{i}".encode())),
                range(16),
            )
        )

    assert len(created) == 1
    keys = {obj["Key"] for obj in moto_s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    stored = [UploadedFile.objects.get(pk=r.json()["id"]).file.name for r in responses]
    assert set(stored) | set(names) == keys
    body = moto_s3.get_object(Bucket=BUCKET, Key=stored[0])["Body"].read()
    assert body == b"note 0"
    # The file tools read back from S3 through the same connection.
    first = UploadedFile.objects.get(pk=responses[0].json()["id"])
    assert make_file_parse(user_id=user.pk).run({"file_id": first.pk}) == (
        f'{{"file_id": {first.pk}, "name": "note0.txt", "lines": ["note 0"]}}'
    )
    assert len(created) == 1


class BlockingStorage(FileSystemStorage):
    """Saves only after the event loop has run another task: proves the save is off the loop."""

    def __init__(self, *, loop_ran: threading.Event, **kwargs):
        super().__init__(**kwargs)
        self.loop_ran = loop_ran

    def save(self, name, content, max_length=None):
        if not self.loop_ran.wait(timeout=10):
            raise AssertionError("the event loop was blocked while the upload ran")
        return super().save(name, content, max_length)


def test_async_save_runs_the_blocking_upload_off_the_event_loop(tmp_path, monkeypatch):
    loop_ran = threading.Event()
    blocking = BlockingStorage(loop_ran=loop_ran, location=tmp_path)
    monkeypatch.setattr(storage, "upload_storage", lambda: blocking)

    async def main() -> str:
        async def other_task() -> None:
            loop_ran.set()

        upload = asyncio.create_task(storage.asave("async/hello.txt", ContentFile(b"hi")))
        await asyncio.sleep(0)
        await other_task()
        return await upload

    name = asyncio.run(main())

    assert (tmp_path / name).read_bytes() == b"hi"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_async_file_upload_records_the_file(user, settings):
    upload = SimpleUploadedFile("async.txt", b"async bytes", content_type="text/plain")

    async def main():
        try:
            return await services.afile_upload(owner=user, upload=upload)
        finally:
            # The ORM ran in asgiref's worker thread; give its connection back.
            await sync_to_async(connections.close_all)()

    uploaded = asyncio.run(main())

    row = UploadedFile.objects.get(pk=uploaded.pk)
    assert (row.owner_id, row.name, row.size) == (user.pk, "async.txt", 11)
    assert (Path(settings.MEDIA_ROOT) / row.file.name).read_bytes() == b"async bytes"
