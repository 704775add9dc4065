"""The funnel: any order and any duplication of notifications (and scan overlap) give the same versions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_ingest.core import Funnel, Observed, retry_delay_ms
from flywheel_ingest.ids import dataset_version_id
from flywheel_ingest.layout import ObjectSeen, Place, place

PREFIXES = ("datasets/",)
MARKER = "_SUCCESS"


def obj(key: str, etag: str = "e1", at: int = 1_000) -> ObjectSeen:
    return ObjectSeen("flywheel-data", key, etag, 10, at)


def where(seen: ObjectSeen) -> Place:
    found = place(seen.key, PREFIXES)
    assert isinstance(found, Place)
    return found


def bucket_listing(objects: list[ObjectSeen], prefix: str) -> list[ObjectSeen]:
    """What ListObjectsV2 would return at close time: every object of the version."""
    return [o for o in objects if o.key.startswith(prefix)]


def run(stream: list[ObjectSeen], truth: list[ObjectSeen], quiet_ms: int, now: int) -> list[str]:
    """Feed the stream, closing due versions after each report as the service does; ids of closed versions."""
    funnel, closed = Funnel(MARKER, quiet_ms), []
    for seen in [*stream, None]:
        if seen is not None:
            funnel.observe(seen, where(seen))
        for version in funnel.due(now):
            covered = bucket_listing(truth, version.prefix)
            data = [o for o in covered if not where(o).is_control]
            closed.append(dataset_version_id(data))
            funnel.finish(version, covered)
    return sorted(closed)


@st.composite
def uploads(draw: st.DrawFn) -> tuple[list[ObjectSeen], list[ObjectSeen]]:
    """A few versions of a few files each, all with a marker; then a shuffled stream with duplicates."""
    truth = []
    for v in range(draw(st.integers(1, 4))):
        prefix = f"datasets/m{v % 2}/v{v}/"
        truth += [obj(f"{prefix}part-{i}.jsonl", f"etag{v}{i}") for i in range(draw(st.integers(1, 4)))]
        truth.append(obj(prefix + MARKER, "empty"))
    dupes = draw(st.lists(st.sampled_from(truth), max_size=12))
    stream = draw(st.permutations(truth + dupes))
    return truth, stream


@settings(max_examples=200, deadline=None)
@given(uploads())
def test_any_order_and_duplication_gives_one_version_each(case: tuple[list[ObjectSeen], list[ObjectSeen]]) -> None:
    truth, stream = case
    expected = run(truth, truth, quiet_ms=10**9, now=2_000)
    assert run(stream, truth, quiet_ms=10**9, now=2_000) == expected
    assert len(expected) == len({where(o).prefix for o in truth})


@settings(max_examples=100, deadline=None)
@given(uploads(), st.data())
def test_scan_overlap_after_close_adds_nothing(case: tuple[list[ObjectSeen], list[ObjectSeen]],
                                               data: st.DataObject) -> None:
    truth, stream = case
    rescan = data.draw(st.permutations(truth))  # the reconciliation scan lists everything again later
    assert run(stream + rescan, truth, quiet_ms=10**9, now=2_000) == run(truth, truth, 10**9, 2_000)


def test_quiet_period_closes_a_version_without_marker() -> None:
    funnel = Funnel(MARKER, quiet_ms=5_000)
    seen = obj("datasets/m/v/a.jsonl", at=1_000)
    funnel.observe(seen, where(seen))
    assert funnel.due(5_999) == []
    assert [v.prefix for v in funnel.due(6_000)] == ["datasets/m/v/"]


def test_a_duplicate_of_a_finished_object_is_done_and_its_receipt_kept_until_finish() -> None:
    funnel = Funnel(MARKER, quiet_ms=10**9)
    data, marker = obj("datasets/m/v/a.jsonl"), obj("datasets/m/v/_SUCCESS")
    assert funnel.observe(data, where(data), "r1") is Observed.NEW
    assert funnel.observe(data, where(data), "r2") is Observed.DUPLICATE_PENDING
    funnel.observe(marker, where(marker), "r3")
    [version] = funnel.due(2_000)
    assert funnel.due(2_000) == []  # closing: not handed out twice
    assert sorted(funnel.finish(version, [data, marker])) == ["r1", "r2", "r3"]
    assert funnel.observe(data, where(data), "r4") is Observed.DUPLICATE_DONE
    assert funnel.pending == {}


def test_an_object_arriving_during_the_close_stays_pending() -> None:
    funnel = Funnel(MARKER, quiet_ms=10**9)
    first, marker, late = obj("datasets/m/v/a.jsonl"), obj("datasets/m/v/_SUCCESS"), obj("datasets/m/v/b.jsonl")
    for seen in (first, marker):
        funnel.observe(seen, where(seen), "r-" + seen.key)
    [version] = funnel.due(2_000)
    funnel.observe(late, where(late), "r-late")
    released = funnel.finish(version, [first, marker])  # the close listed before `late` landed
    assert "r-late" not in released
    assert list(funnel.pending.values())[0].objects == {late.key: late}


def test_an_overwritten_object_is_new() -> None:
    funnel = Funnel(MARKER, quiet_ms=10**9)
    old, new = obj("datasets/m/v/a.jsonl", "e1"), obj("datasets/m/v/a.jsonl", "e2")
    funnel.observe(old, where(old))
    assert funnel.observe(new, where(new)) is Observed.NEW


def test_retry_backs_off_and_counts_attempts() -> None:
    funnel = Funnel(MARKER, quiet_ms=0, backoff_ms=500)
    seen = obj("datasets/m/v/a.jsonl")
    funnel.observe(seen, where(seen))
    [version] = funnel.due(2_000)
    assert funnel.retry(version, 2_000, permanent=True) == 1
    assert funnel.due(2_499) == []
    assert funnel.due(2_500) == [version]
    assert funnel.retry(version, 3_000, permanent=True) == 2
    assert funnel.due(3_999) == []


def test_transient_failures_back_off_to_a_cap_and_never_count_toward_giving_up() -> None:
    funnel = Funnel(MARKER, quiet_ms=0, backoff_ms=500, max_backoff_ms=8_000)
    seen = obj("datasets/m/v/a.jsonl")
    funnel.observe(seen, where(seen))
    now, delays = 10**6, []
    for _ in range(50):
        [version] = funnel.due(now)
        assert funnel.retry(version, now) == 0  # transient: no permanent failure counted, ever
        delays.append(version.retry_at_ms - now)
        now = version.retry_at_ms
    assert delays[:6] == [500, 1_000, 2_000, 4_000, 8_000, 8_000] and set(delays[4:]) == {8_000}
    [version] = funnel.due(now)
    assert funnel.retry(version, now, permanent=True) == 1  # one permanent failure after 50 transient ones
    funnel.finish(version, [])
    assert (version.attempts, version.failures) == (0, 0)
    assert retry_delay_ms(10**6, 500, 60_000) == 60_000  # no overflow however long an outage lasts


def test_held_receipts_are_those_of_open_versions_only() -> None:
    funnel = Funnel("_SUCCESS", quiet_ms=10_000)
    part, marker = obj("datasets/m/v1/part-0.jsonl"), obj("datasets/m/v1/_SUCCESS")
    funnel.observe(part, where(part), "r1")
    funnel.observe(part, where(part), "r2")  # a redelivery: a new, valid handle
    funnel.observe(marker, where(marker), "r3")
    assert funnel.held_receipts() == ["r1", "r2", "r3"]
    (version,) = funnel.due(2_000)
    funnel.finish(version, [part, marker])
    assert funnel.held_receipts() == []
