"""Where uploads live: S3 via django-storages when a bucket is set, local disk otherwise.

Django's storage handler builds the `default` storage once per process
(`settings.STORAGES`). django-storages' `S3Storage` would still open one boto3
connection per *thread*; `SharedConnectionS3Storage` opens it once per process
and shares it (the boto3 client it wraps is thread-safe, and every request
works on its own short-lived `Object`). Blocking storage calls from async code
go through `asave`, which runs them in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading

from django.core.files import File
from django.core.files.storage import Storage, default_storage
from storages.backends.s3 import S3Storage

_connection_lock = threading.Lock()


def create_s3_connection(storage: S3Storage):
    """Build the boto3 S3 resource. Called once per process (see the tests)."""
    return storage._create_session().resource(
        "s3",
        region_name=storage.region_name,
        use_ssl=storage.use_ssl,
        endpoint_url=storage.endpoint_url,
        config=storage.client_config,
        verify=storage.verify,
    )


class SharedConnectionS3Storage(S3Storage):
    """S3Storage with one lazily created boto3 connection per process instead of per thread."""

    @property
    def connection(self):
        connection = self.__dict__.get("_shared_connection")
        if connection is None:
            with _connection_lock:
                connection = self.__dict__.get("_shared_connection")
                if connection is None:
                    connection = create_s3_connection(self)
                    self._shared_connection = connection
        return connection

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_shared_connection", None)
        return state


def upload_storage() -> Storage:
    """The process-wide storage for uploads (`STORAGES["default"]`)."""
    return default_storage


async def asave(name: str, content: File) -> str:
    """`Storage.save` for async callers: the blocking upload runs in a worker thread."""
    return await asyncio.to_thread(upload_storage().save, name, content)
