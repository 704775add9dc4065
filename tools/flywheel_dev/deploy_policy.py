"""Policy checks on rendered Kubernetes objects (plain dicts): each returns human-readable violations.

Pure functions, no I/O: tests/deploy renders the overlays and feeds the objects in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Pod")
WRITABLE_ROOT_FS = "flywheel.dev/writable-root-fs"  # pod annotation: why this image needs a writable root
STAND_IN_CREDENTIALS = "flywheel.dev/stand-in-credentials"  # Secret annotation: dummy values for moto
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY", re.I)

Obj = Mapping[str, Any]


def pod_spec(obj: Obj) -> Mapping[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) if obj.get("kind") in WORKLOAD_KINDS else None


def pod_metadata(obj: Obj) -> Mapping[str, Any]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return obj.get("metadata") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("metadata") or {}


def containers(obj: Obj, *, init: bool = True) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, container) for every container of a workload, e.g. ('Deployment/x init:y', {...})."""
    spec = pod_spec(obj)
    if spec is None:
        return
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    for c in spec.get("containers") or []:
        yield f"{name} container {c.get('name')}", c
    for c in (spec.get("initContainers") or []) if init else []:
        yield f"{name} initContainer {c.get('name')}", c


def check_image_tags(objects: list[Obj], skaffold_images: set[str]) -> list[str]:
    """Pinned tags or digests only; skaffold's own artifacts are named bare (skaffold sets the tag)."""
    out = []
    for obj in objects:
        for where, c in containers(obj):
            image = str(c.get("image", ""))
            last = image.split("@")[0].rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            if "@sha256:" in image or (image in skaffold_images and not tag):
                continue
            if not tag:
                out.append(f"{where}: image {image!r} has no tag (means latest)")
            elif tag == "latest":
                out.append(f"{where}: image {image!r} uses the latest tag")
    return out


def check_resources(objects: list[Obj]) -> list[str]:
    out = []
    for obj in objects:
        for where, c in containers(obj):
            res = c.get("resources") or {}
            for bound in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (res.get(bound) or {})]
                if missing:
                    out.append(f"{where}: no {bound} for {', '.join(missing)}")
    return out


def _effective(pod: Mapping[str, Any], c: Mapping[str, Any], key: str) -> Any:
    value = (c.get("securityContext") or {}).get(key)
    return value if value is not None else (pod.get("securityContext") or {}).get(key)


def check_non_root(objects: list[Obj]) -> list[str]:
    """runAsNonRoot on every container (its own or the pod's), and never uid 0."""
    out = []
    for obj in objects:
        pod = pod_spec(obj) or {}
        for where, c in containers(obj):
            if _effective(pod, c, "runAsNonRoot") is not True:
                out.append(f"{where}: runAsNonRoot is not true")
            if _effective(pod, c, "runAsUser") == 0:
                out.append(f"{where}: runs as uid 0")
    return out


def check_hardened(objects: list[Obj]) -> list[str]:
    """No privilege escalation, all capabilities dropped, read-only root (unless the pod says why not)."""
    out = []
    for obj in objects:
        writable_ok = bool((pod_metadata(obj).get("annotations") or {}).get(WRITABLE_ROOT_FS))
        for where, c in containers(obj):
            ctx = c.get("securityContext") or {}
            if ctx.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
                out.append(f"{where}: capabilities are not all dropped")
            if ctx.get("readOnlyRootFilesystem") is not True and not writable_ok:
                out.append(f"{where}: root filesystem is writable (annotate {WRITABLE_ROOT_FS} with the reason)")
    return out


def check_probes(objects: list[Obj]) -> list[str]:
    out = []
    for obj in objects:
        if obj.get("kind") not in LONG_RUNNING_KINDS:
            continue
        for where, c in containers(obj, init=False):
            missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
            if missing:
                out.append(f"{where}: no {' or '.join(missing)}")
    return out


def check_no_plaintext_secrets(objects: list[Obj], *, allow_stand_ins: bool) -> list[str]:
    """No Secret carries values (except marked moto stand-ins where allowed); no secret-like literals."""
    out = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        stand_in = allow_stand_ins and (obj.get("metadata", {}).get("annotations") or {}).get(STAND_IN_CREDENTIALS)
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")) and not stand_in:
            out.append(f"{name}: a Secret with values is committed in plain text")
        if obj.get("kind") == "ConfigMap":
            out += [f"{name}: key {k} looks like a secret" for k in (obj.get("data") or {}) if SECRET_NAME.search(k)]
        for where, c in containers(obj):
            out += [f"{where}: env {e['name']} has a literal value that looks like a secret"
                    for e in c.get("env") or [] if "value" in e and SECRET_NAME.search(e["name"])]
    return out


def check_config_keys(objects: list[Obj], known: Mapping[str, set[str]], prefix: str = "FLYWHEEL_") -> list[str]:
    """Every key a service reads from a ConfigMap is one of its settings; no FLYWHEEL_ key is unknown."""
    config_maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o.get("kind") == "ConfigMap"}
    every_known = set().union(*known.values()) if known else set()
    out = [f"ConfigMap/{name}: key {key} is no service's setting"
           for name, data in config_maps.items() for key in data if key.startswith(prefix) and key not in every_known]
    for obj in objects:
        component = (pod_metadata(obj).get("labels") or {}).get("app.kubernetes.io/component")
        if component not in known:
            continue
        for where, c in containers(obj):
            refs = [(e.get("configMapRef") or {}).get("name") for e in c.get("envFrom") or []]
            for ref in filter(None, refs):
                out += [f"{where}: ConfigMap/{ref} key {key} is not a {component} setting"
                        for key in config_maps.get(ref, {}) if key not in known[component]]
            out += [f"{where}: env {e['name']} is not a {component} setting"
                    for e in c.get("env") or [] if e["name"].startswith(prefix) and e["name"] not in known[component]]
    return out


def violations(objects: list[Obj], *, skaffold_images: set[str], known_keys: Mapping[str, set[str]],
               allow_stand_ins: bool) -> list[str]:
    """Every policy at once, for one rendered overlay."""
    return [*check_image_tags(objects, skaffold_images), *check_resources(objects), *check_non_root(objects),
            *check_hardened(objects), *check_probes(objects),
            *check_no_plaintext_secrets(objects, allow_stand_ins=allow_stand_ins),
            *check_config_keys(objects, known_keys)]
