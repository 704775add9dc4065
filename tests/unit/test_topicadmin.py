"""`flywheel topics apply`'s plan (pure) and apply loop against an in-memory cluster; the start-up check."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from flywheel import catalogue, cli, topicadmin
from flywheel.catalogue import DEAD_LETTER_RETENTION_MS, EVENT_RETENTION_MS, TOPICS, TopicSpec
from flywheel.settings import FlywheelSettings
from flywheel.topicadmin import ALTER, CREATE, OK, REFUSE, Found, Step, Wanted

SPEC = TopicSpec("model.thing-happened", "ThingHappened", "model_id", 4, "ingest", "A thing.")
LOCAL = {"cleanup.policy": "delete", "retention.ms": str(EVENT_RETENTION_MS), "min.insync.replicas": "1"}


class MemoryCluster:
    """What KafkaTopicAdmin does, on a dict; records every change it is asked for."""

    def __init__(self, topics: Iterable[Found] = ()) -> None:
        self.topics = {t.name: t for t in topics}
        self.calls: list[tuple[str, list[str]]] = []

    def partitions(self) -> dict[str, tuple[int, int]]:
        return {n: (t.partitions, t.replication_factor) for n, t in self.topics.items()}

    def describe(self, names: Iterable[str]) -> dict[str, Found]:
        return {n: self.topics[n] for n in names if n in self.topics}

    def create(self, wants: list[Wanted]) -> None:
        self.calls.append(("create", [w.name for w in wants]))
        for w in wants:
            self.topics[w.name] = Found(w.name, w.partitions, w.replication_factor, dict(w.configs))

    def alter(self, steps: list[Step]) -> None:
        self.calls.append(("alter", [s.topic for s in steps]))
        for s in steps:
            old = self.topics[s.topic]
            configs = {**old.configs, **{c.key: c.new for c in s.changes}}
            self.topics[s.topic] = Found(s.topic, old.partitions, old.replication_factor, configs)


def found(partitions: int = 4, rf: int = 1, **configs: str) -> Found:
    return Found(SPEC.name, partitions, rf, {k.replace("_", "."): v for k, v in configs.items()})


def step(f: Found | None, environment: str = "local") -> Step:
    return topicadmin.plan_topic(Wanted.of(SPEC, environment), f, environment)


def test_a_missing_topic_is_created_with_every_config() -> None:
    s = step(None, "msk")
    assert s.action == CREATE
    assert [c.text() for c in s.changes] == [
        "partitions (unset) → 4", "replication.factor (unset) → 3", "cleanup.policy (unset) → delete",
        f"retention.ms (unset) → {EVENT_RETENTION_MS}", "min.insync.replicas (unset) → 2"]


def test_a_config_that_differs_is_altered_old_to_new() -> None:
    s = step(found(cleanup_policy="delete", retention_ms="604800000"))
    assert s.action == ALTER
    assert [c.text() for c in s.changes] == [f"retention.ms 604800000 → {EVENT_RETENTION_MS}",
                                             "min.insync.replicas (unset) → 1"]
    assert s.line().startswith(f"alter   {SPEC.name}  retention.ms 604800000 → ")


def test_a_topic_as_the_catalogue_wants_it_is_ok() -> None:
    assert step(found(**{k.replace(".", "_"): v for k, v in LOCAL.items()})).action == OK
    policy_in_other_order = Found(SPEC.name, 4, 1, {**LOCAL, "cleanup.policy": "delete"})
    assert step(policy_in_other_order).action == OK
    spec = TopicSpec("s", "S", "k", 1, "ingest", "d", cleanup_policy="compact,delete")
    w = Wanted.of(spec, "local")
    assert topicadmin.plan_topic(w, Found("s", 1, 1, {**w.configs, "cleanup.policy": "delete, compact"})).action == OK


@pytest.mark.parametrize("partitions, says", [(2, "apply never adds partitions"), (8, "cannot remove partitions")])
def test_a_partition_difference_is_refused_with_what_to_do(partitions: int, says: str) -> None:
    s = step(found(partitions, **{k.replace(".", "_"): v for k, v in LOCAL.items()}))
    assert s.action == REFUSE and not s.changes
    assert f"has {partitions} partitions, the catalogue says 4" in s.reason and says in s.reason
    assert f"set partitions={partitions}" in s.reason and "flywheel/catalogue.py" in s.reason
    assert "delete the topic" in s.reason and s.line().startswith(f"refuse  {SPEC.name}  ")


def test_a_replication_factor_below_the_environment_s_is_refused() -> None:
    s = step(found(4, 1), "msk")
    assert s.action == REFUSE and "replication factor 1, the catalogue says 3 for msk" in s.reason


def test_environments_set_replication_and_min_insync() -> None:
    assert (catalogue.durability("local"), catalogue.durability("msk")) == (
        catalogue.Durability(1, 1), catalogue.Durability(3, 2))
    with pytest.raises(KeyError, match="no environment 'prod'"):
        catalogue.durability("prod")


def test_dead_letters_are_kept_longer_than_events() -> None:
    # Forwarded feedback is a hop between serving replicas, not a record of what happened: a day is plenty.
    short = {"serving.feedback-forwarded": catalogue.DAY_MS}
    for t in TOPICS:
        assert t.cleanup_policy == "delete"
        expected = DEAD_LETTER_RETENTION_MS if t.value_schema == "DeadLetter" else EVENT_RETENTION_MS
        assert t.retention_ms == short.get(t.name, expected), t.name
    assert DEAD_LETTER_RETENTION_MS > EVENT_RETENTION_MS
    assert catalogue.retention_text(TOPICS[0]) == "30 d"
    assert catalogue.retention_text(TopicSpec("s", "S", "k", 1, "x", "d", cleanup_policy="compact",
                                              retention_ms=-1)) == "compacted, forever"


def test_apply_creates_and_alters_then_a_second_apply_changes_nothing() -> None:
    existing = Found("dataset.rejected", 4, 1, {"retention.ms": "604800000"})
    cluster = MemoryCluster([existing])
    first = topicadmin.apply(cluster, "local")
    assert {s.action for s in first.before.steps} == {CREATE, ALTER}
    assert [s.topic for s in first.before.of(ALTER)] == ["dataset.rejected"]
    assert first.after is not None and {s.action for s in first.after.steps} == {OK}
    assert [c[0] for c in cluster.calls] == ["create", "alter"]
    second = topicadmin.apply(cluster, "local")
    assert {s.action for s in second.before.steps} == {OK} and second.after is None
    assert len(cluster.calls) == 2  # idempotent: nothing asked of the cluster the second time


def test_dry_run_changes_nothing() -> None:
    cluster = MemoryCluster()
    done = topicadmin.apply(cluster, "msk", dry_run=True)
    assert len(done.before.of(CREATE)) == len(TOPICS) and done.after is None and cluster.calls == []


def test_one_refused_topic_leaves_the_whole_cluster_untouched() -> None:
    cluster = MemoryCluster([Found("dataset.version-ready", 8, 1, {})])
    done = topicadmin.apply(cluster, "local")
    assert [s.topic for s in done.before.refused] == ["dataset.version-ready"]
    assert done.before.of(CREATE) and cluster.calls == []


def test_a_change_the_cluster_did_not_take_is_an_error() -> None:
    class Deaf(MemoryCluster):
        def alter(self, steps: list[Step]) -> None:
            self.calls.append(("alter", [s.topic for s in steps]))

    cluster = Deaf([Found(t.name, t.partitions, 1, {}) for t in TOPICS])
    with pytest.raises(topicadmin.TopicAdminError, match="did not take every change"):
        topicadmin.apply(cluster, "local", verify_s=0)


def settings() -> FlywheelSettings:
    return FlywheelSettings(kafka_bootstrap="127.0.0.1:1")


def test_start_up_check_refuses_a_partition_mismatch_at_once() -> None:
    topics = [Found(t.name, t.partitions, 1, {}) for t in TOPICS]
    topics[0] = Found(topics[0].name, 2, 1, {})
    with pytest.raises(topicadmin.TopicsMismatch, match=f"topic {topics[0].name} has 2 partitions, the catalogue "
                                                        f"expects {TOPICS[0].partitions}"):
        topicadmin.check_service_topics(settings(), "orchestrator", admin=lambda _: MemoryCluster(topics))


def test_start_up_check_waits_for_missing_topics_then_gives_up() -> None:
    with pytest.raises(topicadmin.TopicsUnavailable, match="missing topics .*flywheel topics apply"):
        topicadmin.check_service_topics(settings(), "monitor", wait_s=0, admin=lambda _: MemoryCluster())


def test_start_up_check_passes_when_the_service_s_topics_match() -> None:
    cluster = MemoryCluster([Found(t.name, t.partitions, 1, {}) for t in TOPICS])
    cluster.topics["ingest.dead-letter"] = Found("ingest.dead-letter", 9, 1, {})  # not the monitor's topic
    topicadmin.check_service_topics(settings(), "monitor", admin=lambda _: cluster)
    assert "ingest.dead-letter" not in topicadmin.service_topics("monitor")
    assert topicadmin.service_topics("not-in-the-catalogue") == ()


def test_cli_apply_prints_a_diff_and_exits_1_on_a_refusal(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cluster = MemoryCluster([Found("dataset.rejected", 2, 1, {})])
    monkeypatch.setattr(topicadmin, "KafkaTopicAdmin", lambda _settings: cluster)
    assert cli.main(["topics", "apply"]) == cli.EXIT_REFUSED == 3
    out, err = capsys.readouterr()
    assert "refuse  dataset.rejected  dataset.rejected has 2 partitions" in out and "nothing was changed" in err
    assert "create  dataset.version-ready" in out and cluster.calls == []
    cluster.topics.clear()
    assert cli.main(["topics", "apply", "--environment", "msk", "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert "replication.factor (unset) → 3" in out and "dry run, nothing changed" in out and cluster.calls == []
    assert cli.main(["topics", "apply"]) == 0 and "applied and verified" in capsys.readouterr().out
    assert cli.main(["topics", "apply"]) == 0 and "nothing to change" in capsys.readouterr().out


@pytest.mark.parametrize("profile, replicas", [("local", 1), ("eks", 3)])
def test_faust_s_own_topics_get_the_environment_s_replication(profile: str, replicas: int, tmp_path: Path) -> None:
    from flywheel.faust_app import make_app

    settings = FlywheelSettings(profile=profile, kafka_security_protocol="SASL_SSL" if profile == "eks" else "PLAINTEXT",
                                data_dir=tmp_path)
    assert topicadmin.environment_of(settings) == {"local": "local", "eks": "msk"}[profile]
    assert make_app("probe", settings).conf.topic_replication_factor == replicas


def test_the_admin_client_signs_an_msk_iam_token_as_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from flywheel import msk

    signed: list[str] = []
    monkeypatch.setattr(msk, "signed_token", lambda region: (signed.append(region) or "token", 4102444800.0))
    settings = FlywheelSettings(profile="eks", kafka_security_protocol="SASL_SSL", aws_region="eu-west-1",
                                kafka_bootstrap="127.0.0.1:1")
    topicadmin.KafkaTopicAdmin(settings, timeout_s=1)
    # Signed as the client is built (confluent-kafka 2.16); older clients needed a poll() first and hung.
    assert signed == ["eu-west-1"]
