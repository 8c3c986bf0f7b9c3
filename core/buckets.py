"""Backup buckets on an S3-compatible store (Cloudflare R2 in production) through boto3.

One ``Buckets`` per endpoint and credentials. boto3 is synchronous, so every call runs in a
worker thread; botocore's errors are translated here: a refusal (bad credentials, a bucket name
taken by someone else) is a ``RemoteError`` with S3's code and message, a store that cannot be
reached is ``Unreachable``. ``delete`` empties a bucket first (S3 refuses to delete a non-empty
one) and treats a bucket that is already gone as deleted, so a rollback can always call it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from botocore.client import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from core.errors import InputError, RemoteError, Unreachable

T = TypeVar("T")
# S3's rules, which R2 shares: 3-63 chars, lower-case letters, digits and hyphens.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MISSING = ("NoSuchBucket", "404", "NotFound")
S3TransferFailed = (S3UploadFailedError, S3TransferFailedError)


def check_bucket_name(name: str) -> str:
    if not BUCKET_NAME.match(name):
        raise InputError(
            f"{name!r} is not a bucket name: 3-63 lower-case letters, digits and hyphens"
        )
    return name


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "auto"
    timeout: float = 10.0

    @classmethod
    def from_env(
        cls, endpoint_url: str, access_key_env: str, secret_key_env: str, region: str = "auto"
    ) -> S3Settings:
        missing = [name for name in (access_key_env, secret_key_env) if not os.environ.get(name)]
        if missing:
            raise InputError(f"S3 credentials not set: {', '.join(missing)}")
        return cls(
            endpoint_url, os.environ[access_key_env], os.environ[secret_key_env], region
        )  # fmt: skip


class Buckets:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region if settings.region != "auto" else "us-east-1",
            config=BotoConfig(
                connect_timeout=settings.timeout, read_timeout=settings.timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )  # fmt: skip

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except EndpointConnectionError as exc:
            raise Unreachable(f"S3 store {self.settings.endpoint_url} unreachable: {exc}") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), error.get("Message", str(exc))
            raise RemoteError(f"S3 {what}: {code}: {message}") from None
        except S3TransferFailed as exc:  # boto3's transfer manager wraps the ClientError
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                error = cause.response.get("Error", {})
                raise RemoteError(
                    f"S3 {what}: {error.get('Code', '?')}: {error.get('Message', cause)}"
                ) from None
            raise RemoteError(f"S3 {what}: {exc}") from None
        except BotoCoreError as exc:
            raise RemoteError(f"S3 {what}: {exc}") from None

    async def create(self, name: str) -> None:
        check_bucket_name(name)
        region = self.settings.region
        where: dict[str, Any] = {}
        if region not in ("auto", "us-east-1"):  # S3 wants the region named outside us-east-1
            where = {"CreateBucketConfiguration": {"LocationConstraint": region}}
        await self._call(
            f"create {name}", lambda: self._client.create_bucket(Bucket=name, **where)
        )  # fmt: skip

    async def exists(self, name: str) -> bool:
        try:
            await self._call(f"head {name}", lambda: self._client.head_bucket(Bucket=name))
        except RemoteError as exc:
            if any(code in str(exc) for code in MISSING):
                return False
            raise
        return True

    async def delete(self, name: str) -> None:
        """Empty and delete ``name``; a bucket that does not exist is already deleted."""
        check_bucket_name(name)

        def empty_and_delete() -> None:
            try:
                pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=name)
                for page in pages:
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        self._client.delete_objects(Bucket=name, Delete={"Objects": keys})
                self._client.delete_bucket(Bucket=name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in MISSING:
                    raise

        await self._call(f"delete {name}", empty_and_delete)

    async def upload(self, name: str, key: str, path: Path) -> None:
        await self._call(
            f"upload {key}", lambda: self._client.upload_file(str(path), name, key)
        )  # fmt: skip

    async def download(self, name: str, key: str, path: Path) -> None:
        await self._call(
            f"download {key}", lambda: self._client.download_file(name, key, str(path))
        )  # fmt: skip

    async def remove(self, name: str, keys: list[str]) -> None:
        """Delete ``keys`` from bucket ``name`` (a key already gone counts as deleted)."""

        def delete_objects() -> None:
            for start in range(0, len(keys), 1000):  # S3 takes at most 1000 keys a call
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                answer = self._client.delete_objects(Bucket=name, Delete={"Objects": batch})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise RemoteError(
                        f"S3 delete {first.get('Key')}: {first.get('Code')}: {first.get('Message')}"
                    )

        await self._call(f"delete from {name}", delete_objects)

    async def keys(self, name: str, prefix: str = "") -> list[str]:
        def listing() -> list[str]:
            found: list[str] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=name, Prefix=prefix
            )
            for page in pages:
                found += [o["Key"] for o in page.get("Contents", [])]
            return found

        return await self._call(f"list {name}", listing)
