"""`flywheel models`: list and describe read the stage store; promote and rollback ask on the topic, refusing
what the store already says no to."""

from __future__ import annotations

import boto3
import pytest

from flywheel import cli
from flywheel import lifecycle as lc
from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness import orchestrator as seed
from flywheel_dev.timeline import Timeline


@pytest.fixture
def model_id(stack_env) -> str:
    import uuid

    model = f"cli-{uuid.uuid4().hex[:8]}"
    store = lc.StageStore(boto3.client("s3"), "flywheel-artifacts")
    for i, version in enumerate(("v1", "v2", "v3"), start=1):
        store.update(model, lambda s, v=version, at=i: lc.register(
            s, v, f"s3://flywheel-artifacts/models/{model}/{v}/model.tar.gz", at=at * 1000,
            metrics={"accuracy": 0.7 + at / 100, "macro_f1": 0.6}, dataset_version_id=f"ds{at}"))
    store.update(model, lambda s: lc.promote(s, "v1", at=5000, reason="first"))
    store.update(model, lambda s: lc.reject(s, "v2", at=6000, reason="not better",
                                            evidence={"delta": 0.0, "p_value": 0.59, "b": 10, "c": 10, "n": 200}))
    return model


def test_list_and_describe_show_stages_metrics_and_history(model_id, capsys):
    assert cli.main(["models", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(model_id))
    assert "v1" in line and "1 production, 1 rejected, 1 registered" in line and "0.7100" in line
    assert cli.main(["models", "describe", model_id]) == 0
    out = " ".join(capsys.readouterr().out.split())  # columns padded to width: compare words
    assert "production: v1" in out and "v2 rejected 0.7200 0.6000" in out and "ds3" in out
    assert "reject v2 v1 not better" in out and "not better" in out and "p_value=0.59" in out
    assert cli.main(["models", "describe", model_id, "--json"]) == 0
    assert '"generation": 5' in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "words"), [
    (["promote", "{m}", "v9"], "has no version 'v9'; known: v1, v2, v3"),
    (["promote", "{m}", "v1"], "v1 is already production"),
    (["rollback", "{m}"], "no previous production version"),
    (["rollback", "nobody"], "no model 'nobody' in the stage store"),
])
def test_a_request_the_store_refuses_is_not_sent(model_id, capsys, argv, words):
    assert cli.main(["models", *[a.format(m=model_id) for a in argv]]) == 2
    assert words in capsys.readouterr().err


def test_promote_publishes_a_stage_change_request(model_id, capsys):
    settings = FlywheelSettings()
    watch = Timeline(settings, build_codec(settings))
    try:
        assert cli.main(["models", "promote", model_id, "v3", "--reason", "checked by hand"]) == 0
        seen, = seed.wait_for(watch, "model.stage-change-requested", model_id, timeout_s=30)
    finally:
        watch.close()
    assert (seen.record["action"], seen.record["model_version"], seen.record["reason"]) == (
        "promote", "v3", "checked by hand")
    assert seen.record["envelope"]["event_id"] in capsys.readouterr().out
