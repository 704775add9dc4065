"""StageStore against the moto S3 API: conditional writes, retries on 412, no lost update."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from flywheel import lifecycle as lc

BUCKET = "flywheel-artifacts-test"


@pytest.fixture
def s3(moto_s3: object) -> object:
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


def test_moto_honours_conditional_puts(s3) -> None:
    """The quirk the store relies on: IfNoneMatch and a stale IfMatch both answer 412."""
    etag = s3.put_object(Bucket=BUCKET, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfMatch=etag)
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": etag}):
        with pytest.raises(s3.exceptions.ClientError) as raised:
            s3.put_object(Bucket=BUCKET, Key="k", Body=b"3", **condition)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_read_update_and_list(s3) -> None:
    store = lc.StageStore(s3, BUCKET)
    assert store.read("m") is None and store.models() == []
    written = store.update("m", lambda s: lc.register(s, "v1", "s3://a/v1.tar.gz", at=1))
    assert written.generation == 1 and store.read("m") == written
    promoted = store.update("m", lambda s: lc.promote(s, "v1", at=2, reason="first"))
    assert promoted.generation == 2 and store.read("m").production == "v1"
    assert store.update("m", lambda s: lc.register(s, "v1", "s3://a/v1.tar.gz", at=3)).generation == 2
    s3.put_object(Bucket=BUCKET, Key="models/m/run-1/model.tar.gz", Body=b"x")
    assert store.models() == ["m"]


def test_illegal_transition_propagates_and_writes_nothing(s3) -> None:
    store = lc.StageStore(s3, BUCKET)
    store.update("m", lambda s: lc.register(s, "v1", "s3://a/v1.tar.gz", at=1))
    with pytest.raises(lc.IllegalTransition):
        store.update("m", lambda s: lc.rollback(s, at=2, reason="x"))
    assert store.read("m").generation == 1


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A moto server on loopback: real HTTP, so concurrent writers race as they would against S3."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://{host}:{port}")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.stop()


def test_concurrent_writers_never_lose_an_update(s3_server) -> None:
    writers, per_writer = 4, 6
    store = lc.StageStore(s3_server, BUCKET, max_attempts=200)
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        barrier.wait()
        try:
            for i in range(per_writer):
                store.update("m", lambda s, v=f"w{w}-{i}", at=i: lc.register(s, v, f"s3://a/{v}.tar.gz", at=at))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = store.read("m")
    assert len(final.versions) == writers * per_writer
    assert final.generation == writers * per_writer


def test_a_writer_that_always_loses_gives_up_with_a_conflict(s3) -> None:
    store = lc.StageStore(s3, BUCKET, max_attempts=3)
    store.update("m", lambda s: lc.register(s, "v1", "s3://a/v1.tar.gz", at=1))

    def racing(stages: lc.ModelStages) -> lc.ModelStages:
        other = lc.StageStore(s3, BUCKET)
        other.update("m", lambda s: lc.register(s, f"x{len(s.versions)}", "s3://a/x", at=1))
        return lc.register(stages, "mine", "s3://a/mine", at=2)

    with pytest.raises(lc.StageConflict):
        store.update("m", racing)
