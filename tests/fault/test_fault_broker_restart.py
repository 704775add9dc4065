"""Kill the broker, land data while it is down, start it again.

The local broker (Tansu) keeps its log in memory, so its restart is a loss of every topic and committed offset,
which MSK never does. What must hold is what a real outage also demands: nothing that the broker has not
acknowledged is lost (ingest keeps the SQS messages until the broker acks) and no training job runs twice
(job ids are derived; ingest's and the launcher's records live in S3, not in Kafka). The services stay up while
the broker is away. Services left running across the wipe misbehave on this broker only (they wait for offsets
of the old log, and what they produce right after the restart can be invisible to later readers; see
docs/reliability.md), so the procedure tested is the runbook's for a wiped broker: the services are killed
before it comes back and started after, and rebuild from S3 and the new log.
"""

from __future__ import annotations

import signal
import uuid

from test_fault_kill_services import upload

from conftest import ARTIFACTS, assert_one_run_per_trigger, wait_until
from flywheel_dev.demo import settings_for
from flywheel_dev.timeline import Timeline

RUN = uuid.uuid4().hex[:6]


def test_broker_restart_loses_no_unacknowledged_trigger_and_runs_nothing_twice(running) -> None:
    before, during, after = (f"fault-broker-{n}-{RUN}" for n in ("before", "during", "after"))
    upload(running, before)
    [first] = running.timeline.wait_for(
        "ModelVersionRegistered", lambda s: s.get("model_id") == before, timeout=90
    )
    jobs_before = running.job_records(first.get("run_id"))

    running.stack.stop_broker()
    upload(running, during)  # lands while the broker is down: validated, but its event cannot be acked
    wait_until(lambda: manifests(running, during), "ingest to validate the outage's version")
    assert running.dead_services() == []  # nothing crashes while the broker is away
    for proc in running.platform.procs.values():
        proc.kill(
            signal.SIGKILL
        )  # the runbook: no service may write into the new, empty log before it is rolled
    running.stack.start_broker()
    for proc in running.platform.procs.values():
        proc.start()
    for proc in running.platform.procs.values():
        proc.wait_healthy(timeout=90)
    running.timeline.close()  # its positions belong to the old log, like every other consumer's
    running.timeline = Timeline(settings_for(running.stack), running.codec)

    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == during, timeout=120)
    upload(running, after)  # and the platform works as before
    running.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("model_id") == after, timeout=120)

    s3 = running.s3()
    for model in (during, after):
        ready = running.timeline.matching("DatasetVersionReady", lambda s, m=model: s.get("model_id") == m)
        assert len({s.get("dataset_version_id") for s in ready}) == 1
        [done] = s3.list_objects_v2(Bucket="flywheel-data", Prefix=f"ingest-state/done/{model}/")["Contents"]
        [started] = assert_one_run_per_trigger(running, lambda s, m=model: s.get("model_id") == m)
        assert done["Key"].endswith(f"/{started.get('dataset_version_id')}.json")
        assert job_runs(running, model) == [started.get("run_id")]
    # The version published before the restart is not published or trained again from ingest's S3 records.
    assert running.timeline.matching("DatasetVersionReady", lambda s: s.get("model_id") == before) == []
    assert running.timeline.matching("TrainingRunStarted", lambda s: s.get("model_id") == before) == []
    assert running.job_records(first.get("run_id")) == jobs_before
    assert job_runs(running, before) == [first.get("run_id")]


def job_runs(running, model: str) -> list[str]:
    """Run ids the launcher holds a job for, for `model` (run ids are `fw-<model>-<kind>-<hash>`)."""
    found = running.s3().list_objects_v2(Bucket=ARTIFACTS, Prefix=f"jobs/fw-{model}-", Delimiter="/")
    return sorted(p["Prefix"].split("/")[1] for p in found.get("CommonPrefixes", []))


def manifests(running, model: str) -> list:
    return (
        running.s3().list_objects_v2(Bucket="flywheel-data", Prefix=f"manifests/{model}/").get("Contents", [])
    )


def test_every_service_alive_at_the_end(running) -> None:
    assert running.dead_services() == []
