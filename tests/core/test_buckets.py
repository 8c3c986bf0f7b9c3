"""Backup buckets against a real S3-compatible server (moto's server mode on loopback)."""

from __future__ import annotations

import uuid

import pytest

from core.buckets import Buckets, S3Settings
from core.errors import InputError, RemoteError, Unreachable
from tests.auxil.net import free_port


def name() -> str:
    return f"claw-{uuid.uuid4().hex[:12]}"


async def test_a_bucket_is_created_filled_read_and_deleted_with_its_objects(s3, tmp_path):
    buckets, bucket = Buckets(s3), name()
    await buckets.create(bucket)
    assert await buckets.exists(bucket)
    source = tmp_path / "state.tar.gz"
    source.write_bytes(b"\x1f\x8b backup bytes")
    await buckets.upload(bucket, "backups/1.tar.gz", source)
    assert await buckets.keys(bucket, "backups/") == ["backups/1.tar.gz"]
    await buckets.download(bucket, "backups/1.tar.gz", tmp_path / "back.tar.gz")
    assert (tmp_path / "back.tar.gz").read_bytes() == source.read_bytes()
    await buckets.delete(bucket)
    assert not await buckets.exists(bucket)


async def test_deleting_a_bucket_that_is_gone_is_not_an_error(s3):
    await Buckets(s3).delete(name())


async def test_a_refusal_by_the_store_is_a_remote_error_with_s3s_code(s3, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RemoteError, match=r"S3 upload k: NoSuchBucket: "):
        await Buckets(s3).upload(name(), "k", tmp_path / "f")


async def test_a_bucket_outside_us_east_1_is_created_in_its_region(s3):
    elsewhere, bucket = Buckets(S3Settings(s3.endpoint_url, "t", "t", "eu-west-1")), name()
    await elsewhere.create(bucket)
    assert await elsewhere.exists(bucket)
    await elsewhere.delete(bucket)


@pytest.mark.parametrize("bad", ["A", "UPPER-case", "under_score", "x" * 64, "-dash"])
async def test_a_bad_bucket_name_is_refused_before_any_call(s3, bad):
    with pytest.raises(InputError, match="not a bucket name"):
        await Buckets(s3).create(bad)


async def test_a_store_that_is_down_is_unreachable():
    settings = S3Settings(f"http://127.0.0.1:{free_port()}", "k", "s", timeout=1.0)
    with pytest.raises(Unreachable, match="unreachable"):
        await Buckets(settings).create(name())
