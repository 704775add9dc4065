"""Register the training workflow on a Flyte cluster: `flywheel-orchestrator flyte package|register`.

The tasks run the orchestrator's own image (the console script hands `pyflyte-execute` through, __main__.py);
the registered version is the image's tag plus a digest of the task settings, and the registered launch plan
is made the active one, which is what the orchestrator launches unless FLYWHEEL_FLYTE_VERSION pins a version.
The task pods' FLYWHEEL_*
settings are set on the tasks at registration from the same env files the orchestrator's ConfigMaps are
generated from (k8s/overlays/eks), so a task pod reads S3 and starts SageMaker jobs exactly as the service
is configured (docs/decisions/0014-flyte-remote.md).

`package` serialises offline (no network): the task, workflow and launch-plan specs as flyteidl protobuf
files in a tar.gz, the layout `pyflyte package` writes and `flytectl register files` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flywheel_orchestrator.executors import LAUNCH_PLAN

# Task-pod settings that must not come from the service's environment: the pod gets its own.
_NOT_FOR_TASKS = ("FLYWHEEL_WEB_", "FLYWHEEL_ENGINE", "FLYWHEEL_FLYTE_", "FLYWHEEL_MODELS")


def version_of(image: str) -> str:
    """The tag of an image reference (registry/repo:tag[@digest]); a digest-only reference has none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError(f"image {image!r} has no tag: name the version with --version")
    return last.rsplit(":", 1)[1]


def registered_version(image: str, env: Mapping[str, str]) -> str:
    """The image's tag plus a digest of the task settings: a changed ConfigMap registers a new version (Flyte
    refuses to change a registered version, and flytekit would skip it silently), an unchanged one is a no-op."""
    digest = hashlib.sha256(json.dumps(dict(sorted(env.items()))).encode()).hexdigest()[:8]
    return f"{version_of(image)}-{digest}"


def read_env_files(paths: Iterable[Path]) -> dict[str, str]:
    """KEY=VALUE lines as kustomize's configMapGenerator reads them (later files win; # comments)."""
    env: dict[str, str] = {}
    for path in paths:
        for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
            env[key.strip()] = value
    return env


def task_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The FLYWHEEL_* settings a task pod needs, without the service-only ones."""
    return {k: v for k, v in sorted(env.items())
            if k.startswith("FLYWHEEL_") and not k.startswith(_NOT_FOR_TASKS)}


def serialization_settings(image: str, project: str, domain: str, version: str, env: Mapping[str, str]) -> Any:
    from flytekit.configuration import ImageConfig, SerializationSettings

    return SerializationSettings(image_config=ImageConfig.from_images(image), project=project, domain=domain,
                                 version=version, env=dict(env))


def serialize(image: str, project: str, domain: str, version: str, env: Mapping[str, str]) -> list[tuple[str, Any]]:
    """(file name, flyteidl admin spec) for each task, the workflow and its default launch plan, in
    registration order (tasks first)."""
    from flytekit import FlyteContextManager, LaunchPlan
    from flytekit.models import launch_plan as lp_models
    from flytekit.models import task as task_models
    from flytekit.models.admin import workflow as wf_models
    from flytekit.tools.translator import get_serializable

    from flywheel_orchestrator.workflow import training_workflow

    settings = serialization_settings(image, project, domain, version, env)
    mapping: OrderedDict = OrderedDict()
    get_serializable(mapping, settings, training_workflow)
    default_plan = LaunchPlan.get_default_launch_plan(FlyteContextManager.current_context(), training_workflow)
    get_serializable(mapping, settings, default_plan)
    kinds = ((task_models.TaskSpec, 1), (wf_models.WorkflowSpec, 2), (lp_models.LaunchPlan, 3))
    ordered = sorted(((next(k for cls, k in kinds if isinstance(spec, cls)), spec) for spec in mapping.values()
                      if isinstance(spec, tuple(cls for cls, _ in kinds))), key=lambda item: item[0])
    files = []
    for number, (kind, spec) in enumerate(ordered):
        name = spec.id.name if kind == 3 else spec.template.id.name
        files.append((f"{number}_{name}_{kind}.pb", spec.to_flyte_idl()))
    return files


def package(out: Path, image: str, project: str, domain: str, version: str, env: Mapping[str, str]) -> list[str]:
    """Write the serialised specs to a tar.gz (offline); the member names."""
    files = serialize(image, project, domain, version, env)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for name, proto in files:
            data = proto.SerializeToString()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return [name for name, _ in files]


def register(remote: Any, image: str, version: str, env: Mapping[str, str], *, activate: bool = True) -> Any:
    """Create the project if it is missing, register tasks, workflow and default launch plan under `version` (a
    re-run of the same version is a no-op) and make that launch plan the active one; its identifier."""
    from flytekit.exceptions.user import FlyteEntityAlreadyExistsException
    from flytekit.models.core.identifier import Identifier, ResourceType
    from flytekit.models.launch_plan import LaunchPlanState
    from flytekit.models.project import Project

    from flywheel_orchestrator.workflow import training_workflow

    with contextlib.suppress(FlyteEntityAlreadyExistsException):  # created by an earlier registration
        remote.client.register_project(Project(remote.default_project, remote.default_project,
                                               "Flywheel: the training workflow (flywheel-orchestrator)"))
    settings = serialization_settings(image, remote.default_project, remote.default_domain, version, env)
    remote.register_workflow(training_workflow, settings, version=version)
    plan = Identifier(ResourceType.LAUNCH_PLAN, remote.default_project, remote.default_domain, LAUNCH_PLAN, version)
    if activate:
        remote.client.update_launch_plan(plan, LaunchPlanState.ACTIVE)
    return plan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel-orchestrator flyte",
                                     description="Package or register the training workflow on Flyte.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("package", "register"):
        p = sub.add_parser(name)
        p.add_argument("--image", default=os.environ.get("FLYWHEEL_FLYTE_IMAGE", ""),
                       help="the orchestrator image the tasks run (registry/flywheel-orchestrator:tag)")
        p.add_argument("--version", default="",
                       help="registered version (default: the image's tag and a digest of the task settings)")
        p.add_argument("--project", default=os.environ.get("FLYWHEEL_FLYTE_PROJECT", "flywheel"))
        p.add_argument("--domain", default=os.environ.get("FLYWHEEL_FLYTE_DOMAIN", "production"))
        p.add_argument("--env-file", action="append", default=[], type=Path,
                       help="KEY=VALUE file(s) of the orchestrator's ConfigMaps: the task pods' FLYWHEEL_* settings")
        p.add_argument("--from-environment", action="store_true",
                       help="also take the FLYWHEEL_* settings of this process (an in-cluster Job with envFrom)")
    sub.choices["package"].add_argument("--output", type=Path, default=Path("flyte-package.tgz"))
    reg = sub.choices["register"]
    reg.add_argument("--endpoint", default=os.environ.get("FLYWHEEL_FLYTE_ENDPOINT", ""), help="flyteadmin gRPC host:port")
    reg.add_argument("--insecure", action="store_true",
                     default=os.environ.get("FLYWHEEL_FLYTE_INSECURE", "").lower() in ("1", "true", "yes"),
                     help="plain gRPC (an in-cluster flyte-binary without TLS)")
    reg.add_argument("--no-activate", dest="activate", action="store_false",
                     help="register without making this version the active launch plan")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.image:
        raise SystemExit("--image (or FLYWHEEL_FLYTE_IMAGE) is required: the image the tasks run")
    env = task_environment({**read_env_files(args.env_file), **(os.environ if args.from_environment else {})})
    version = args.version or registered_version(args.image, env)
    if args.command == "package":
        names = package(args.output, args.image, args.project, args.domain, version, env)
        print(f"wrote {args.output}: {len(names)} entities, version {version}")
        return 0
    if not args.endpoint:
        raise SystemExit("--endpoint (or FLYWHEEL_FLYTE_ENDPOINT) is required: flyteadmin's gRPC host:port")
    from flytekit.configuration import Config
    from flytekit.remote import FlyteRemote

    remote = FlyteRemote(Config.for_endpoint(args.endpoint, insecure=args.insecure), default_project=args.project,
                         default_domain=args.domain)
    plan = register(remote, args.image, version, env, activate=args.activate)
    print(f"registered {plan.name} version {plan.version} in {plan.project}/{plan.domain}"
          + (" (active)" if args.activate else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
