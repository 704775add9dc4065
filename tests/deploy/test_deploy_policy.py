"""Each policy check passes the real rendered overlays and rejects a broken copy of them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from flywheel_dev import deploy_check, deploy_policy

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def local() -> Objects:
    return deploy_check.render_overlay("local")


@pytest.fixture(scope="module")
def eks() -> Objects:
    return deploy_check.render_overlay("eks")


@pytest.fixture(scope="module")
def known() -> dict[str, set[str]]:
    return deploy_check.known_settings_keys()


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name))


def service(objects: Objects, svc: str = "ingest") -> dict[str, Any]:
    return find(objects, "Deployment", f"flywheel-{svc}")["spec"]["template"]["spec"]["containers"][0]


def tag_latest(o: Objects) -> None:
    find(o, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"][0]["image"] = "grafana/grafana:latest"


def untagged_third_party(o: Objects) -> None:
    find(o, "Deployment", "moto")["spec"]["template"]["spec"]["containers"][0]["image"] = "motoserver/moto"


def own_image_tagged_latest(o: Objects) -> None:
    service(o)["image"] = "flywheel-ingest:latest"


def no_limits(o: Objects) -> None:
    del service(o, "monitor")["resources"]["limits"]


def no_init_requests(o: Objects) -> None:
    del find(o, "Deployment", "flywheel-ingest")["spec"]["template"]["spec"]["initContainers"][0]["resources"]


def root_user(o: Objects) -> None:
    service(o)["securityContext"]["runAsUser"] = 0


def not_non_root(o: Objects) -> None:
    pod = find(o, "Deployment", "prometheus")["spec"]["template"]["spec"]
    pod["securityContext"].pop("runAsNonRoot")
    pod["containers"][0]["securityContext"].pop("runAsNonRoot")


def writable_root(o: Objects) -> None:
    service(o, "orchestrator")["securityContext"]["readOnlyRootFilesystem"] = False


def unexplained_writable_root(o: Objects) -> None:
    find(o, "StatefulSet", "kafka")["spec"]["template"]["metadata"]["annotations"].clear()


def keeps_capabilities(o: Objects) -> None:
    service(o)["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def escalates(o: Objects) -> None:
    service(o)["securityContext"]["allowPrivilegeEscalation"] = True


def no_readiness(o: Objects) -> None:
    del service(o, "monitor")["readinessProbe"]


def no_liveness(o: Objects) -> None:
    del find(o, "StatefulSet", "kafka")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]


def unmarked_secret(o: Objects) -> None:
    find(o, "Secret", "moto-credentials")["metadata"]["annotations"].clear()


def secret_literal(o: Objects) -> None:
    service(o)["env"].append({"name": "FLYWHEEL_KAFKA_SASL_PASSWORD", "value": "hunter2"})


def secret_in_config_map(o: Objects) -> None:
    find(o, "ConfigMap", "flywheel-common")["data"]["AWS_SECRET_ACCESS_KEY"] = "abc"


def unknown_key(o: Objects) -> None:
    find(o, "ConfigMap", "flywheel-common")["data"]["FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9092"


def other_services_key(o: Objects) -> None:
    find(o, "ConfigMap", "flywheel-ingest")["data"]["FLYWHEEL_ARTIFACT_BUCKET"] = "b"


BREAKAGES: list[tuple[Callable[[Objects], None], str]] = [
    (tag_latest, "check_image_tags"), (untagged_third_party, "check_image_tags"),
    (own_image_tagged_latest, "check_image_tags"), (no_limits, "check_resources"),
    (no_init_requests, "check_resources"), (root_user, "check_non_root"), (not_non_root, "check_non_root"),
    (writable_root, "check_hardened"), (unexplained_writable_root, "check_hardened"),
    (keeps_capabilities, "check_hardened"), (escalates, "check_hardened"), (no_readiness, "check_probes"),
    (no_liveness, "check_probes"), (unmarked_secret, "check_no_plaintext_secrets"),
    (secret_literal, "check_no_plaintext_secrets"), (secret_in_config_map, "check_no_plaintext_secrets"),
    (unknown_key, "check_config_keys"), (other_services_key, "check_config_keys"),
]


def run(check: str, objects: Objects, known: dict[str, set[str]], *, stand_ins: bool = True) -> list[str]:
    fn = getattr(deploy_policy, check)
    if check == "check_image_tags":
        return fn(objects, deploy_check.skaffold_images())
    if check == "check_no_plaintext_secrets":
        return fn(objects, allow_stand_ins=stand_ins)
    if check == "check_config_keys":
        return fn(objects, known)
    return fn(objects)


@pytest.mark.parametrize(("breakage", "check"), BREAKAGES, ids=[b.__name__ for b, _ in BREAKAGES])
def test_each_check_rejects_a_broken_manifest(breakage: Callable[[Objects], None], check: str, local: Objects,
                                              known: dict[str, set[str]]) -> None:
    assert run(check, local, known) == []  # the committed overlay passes this very check...
    broken = copy.deepcopy(local)
    breakage(broken)
    assert run(check, broken, known), f"{check} accepted {breakage.__name__}"  # ...and the broken copy fails it


def test_moto_stand_in_credentials_are_refused_outside_the_local_overlay(local: Objects,
                                                                          known: dict[str, set[str]]) -> None:
    found = run("check_no_plaintext_secrets", local, known, stand_ins=False)
    assert found == [f"Secret/{find(local, 'Secret', 'moto-credentials')['metadata']['name']}: "
                     "a Secret with values is committed in plain text"]


def test_schema_validation_rejects_an_unknown_field(local: Objects) -> None:
    broken = copy.deepcopy(find(local, "Deployment", "flywheel-ingest"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert deploy_check.schema_errors([find(local, "Deployment", "flywheel-ingest")]) == []
    assert deploy_check.schema_errors([broken])


def test_schema_validation_rejects_a_wrong_type(eks: Objects) -> None:
    broken = copy.deepcopy(find(eks, "Service", "flywheel-monitor"))
    broken["spec"]["ports"][0]["port"] = "six-thousand"
    assert deploy_check.schema_errors([broken])


def test_service_monitor_schema_rejects_a_monitor_without_endpoints(eks: Objects) -> None:
    monitor = find(eks, "ServiceMonitor", "flywheel-monitor")
    assert deploy_check.schema_errors([monitor]) == []
    broken = copy.deepcopy(monitor)
    del broken["spec"]["endpoints"]
    assert deploy_check.schema_errors([broken])


def test_unknown_custom_resources_are_refused_not_skipped() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert deploy_check.schema_errors([obj]) == ["Widget/w: no schema for example.com/v1 Widget"]


def test_render_fails_loudly_on_a_broken_kustomization(tmp_path: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RuntimeError, match="kubectl kustomize"):
        deploy_check.render(tmp_path)
