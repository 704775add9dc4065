"""Dockerfiles: pinned slim bases, multi-stage, non-root, the core plus one service, schemas, console scripts;
and what a service image installs (the core's and the service's wheels) carries no tooling."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from flywheel_dev import deploy_check

REPO = deploy_check.REPO
SERVICES = ("ingest", "orchestrator", "monitor", "serving")
SERVICE_DOCKERFILE = REPO / "services" / "Dockerfile"
TRAINING_DOCKERFILE = REPO / "services" / "training" / "Dockerfile"
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")


def global_args(text: str) -> dict[str, str]:
    """ARGs with defaults declared before the first FROM (the only ones a FROM line can use)."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text.split("\nFROM ", 1)[0], re.M))


def stages(text: str) -> dict[str, tuple[str, str]]:
    """stage name -> (its FROM argument, its instructions); an unnamed stage is keyed by its position."""
    found: dict[str, tuple[str, str]] = {}
    for i, part in enumerate(re.split(r"^FROM ", text, flags=re.M)[1:]):
        header, _, body = part.partition("\n")
        source, *alias = re.split(r"\s+AS\s+", header.strip(), flags=re.I)
        found[alias[0] if alias else f"#{i}"] = (source, body)
    return found


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), value)


def service_stage(text: str, svc: str) -> str:
    """The instructions of the image built with SERVICE=svc: the shared stages plus the service's own."""
    found = stages(text)
    *_, (last, _) = found.values()
    name = expand(last, {**global_args(text), "SERVICE": svc})
    return found[name][1]


def copies(body: str) -> list[str]:
    """COPY sources from the build context (not from other stages)."""
    return [src for line in re.findall(r"^COPY (?!--from)(.*)$", body, re.M) for src in line.split()[:-1]]


@pytest.mark.parametrize("path", [SERVICE_DOCKERFILE, TRAINING_DOCKERFILE], ids=["services", "training"])
def test_bases_are_pinned_slim_images_and_builds_are_multi_stage(path: Path) -> None:
    text = path.read_text()
    found, args = stages(text), global_args(text)
    external = [expand(source, args) for source, _ in found.values()
                if not any(expand(source, {**args, "SERVICE": s}) in found for s in SERVICES)]
    assert len(external) == 2 and all(PINNED_BASE.match(b) for b in external), external
    assert "latest" not in text and "COPY --from=build" in text


def test_no_per_service_dockerfiles_remain() -> None:
    assert [p for p in (REPO / "services").glob("*/Dockerfile") if p.parent.name != "training"] == []


@pytest.mark.parametrize("svc", SERVICES)
def test_the_service_build_arg_selects_the_services_own_final_stage(svc: str) -> None:
    text = SERVICE_DOCKERFILE.read_text()
    assert re.search(r"^ARG SERVICE$", text, re.M), "SERVICE is a required build argument (no default)"
    *_, (last, _) = stages(text).values()
    assert last == "service-${SERVICE}" and f"service-{svc}" in stages(text)


@pytest.mark.parametrize("svc", SERVICES)
def test_service_image_installs_the_core_and_its_service_and_runs_its_console_script(svc: str) -> None:
    text = SERVICE_DOCKERFILE.read_text()
    scripts = tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"flywheel-{svc}" in scripts
    installs = re.findall(r"pip install (.*)$", text, re.M)
    assert len(installs) == 1 and "-c constraints.txt" in installs[0]
    assert installs[0].endswith(" . ./services/${SERVICE}") and "-e " not in installs[0] and "[" not in installs[0]
    own = service_stage(text, svc)
    assert re.findall(r"^ENTRYPOINT (.*)$", own, re.M) == [f'["flywheel-{svc}"]']
    runtime = stages(text)["runtime"][1]
    assert "ENTRYPOINT" not in runtime, "each service stage names its own console script"
    assert "COPY schemas/ /app/schemas/" in runtime and "FLYWHEEL_SCHEMA_DIR=/app/schemas" in runtime


def test_the_build_copies_only_the_core_and_the_named_service() -> None:
    found = stages(SERVICE_DOCKERFILE.read_text())
    assert copies(found["build"][1]) == ["pyproject.toml", "constraints.txt", "README.md", "flywheel/",
                                         "services/${SERVICE}/"]
    assert copies(found["runtime"][1]) == ["schemas/"]
    extra = {name: copies(body) for name, (_, body) in found.items() if name.startswith("service-") and copies(body)}
    assert extra == {"service-orchestrator": ["services/training/*.py"]}
    assert "FLYWHEEL_TRAINING_ENTRY_POINT=/app/training/train.py" in found["service-orchestrator"][1]
    assert (REPO / "services" / "training" / "train.py").is_file()


def test_only_the_torch_services_builds_use_the_cpu_torch_index() -> None:
    build = stages(SERVICE_DOCKERFILE.read_text())["build"][1]
    for svc in ("orchestrator", "serving"):
        assert f'if [ "${{SERVICE}}" = {svc} ]; then set -- --extra-index-url "${{TORCH_INDEX}}"; fi' in build
    assert build.count("TORCH_INDEX}") == 2
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in build


@pytest.mark.parametrize("svc", SERVICES)
def test_service_image_runs_as_the_uid_the_manifests_expect(svc: str) -> None:
    user = re.findall(r"^USER (\d+):(\d+)$", SERVICE_DOCKERFILE.read_text(), re.M)
    pod = next(o for o in deploy_check.render_overlay("local")
               if o["kind"] == "Deployment" and o["metadata"]["name"] == f"flywheel-{svc}")
    assert user == [(str(pod["spec"]["template"]["spec"]["securityContext"]["runAsUser"]),) * 2]


def test_training_image_follows_the_sagemaker_contract() -> None:
    text = TRAINING_DOCKERFILE.read_text()
    assert 'CMD ["train"]' in text and "/usr/local/bin/train" in text and "ENTRYPOINT" not in text
    assert "services/training/requirements.txt" in text and "SM_MODEL_DIR=/opt/ml/model" in text
    assert (REPO / "services" / "training" / "train.py").is_file()
    # train.py reads data with flywheel.datareader: the core is installed, without its dependencies
    assert "COPY flywheel/ /src/flywheel/" in text and "pip install --no-deps /src" in text


def test_training_image_variants_are_selected_by_build_args_and_checked_at_build() -> None:
    """One Dockerfile, two images: CPU torch by default, CUDA torch with TORCH_VARIANT=cuda (skaffold's
    flywheel-training-cuda); the build asserts torch matches the variant, and the entry point is baked in."""
    text = TRAINING_DOCKERFILE.read_text()
    build = stages(text)["build"][1]
    assert "ARG TORCH_VARIANT=cpu" in build and "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in build
    assert '--extra-index-url "${TORCH_INDEX}"' in build
    assert "torch.version.cuda is not None" in build and "== ('${TORCH_VARIANT}' == 'cuda')" in build
    final = list(stages(text).values())[-1][1]
    assert "COPY services/training/*.py /opt/ml/code/" in final and "exec python /opt/ml/code/train.py" in final
    assert "sagemaker_submit_directory" not in text


def test_dockerignore_allows_only_what_images_need() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "flywheel", "services", "schemas"}


# What an image installs: `pip install . ./services/<svc>` builds these two wheels (non-editable).

SOURCE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """distribution name -> its wheel, built offline from a copy of what the Dockerfile copies."""
    work, out = tmp_path_factory.mktemp("sources"), tmp_path_factory.mktemp("wheels")
    root = work / "root"
    root.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "flywheel", root / "flywheel", ignore=SOURCE_IGNORE)
    sources = {"flywheel": root}
    for svc in SERVICES:
        sources[f"flywheel-{svc}"] = work / svc
        shutil.copytree(REPO / "services" / svc, work / svc, ignore=SOURCE_IGNORE)
    for path in sources.values():
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--no-index", "-q", "-w", str(out), str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    built = {p.name.split("-")[0].replace("_", "-"): p for p in out.glob("*.whl")}
    assert set(built) == set(sources), built
    return built


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name.split("/", 1)[0] for name in zf.namelist() if not name.split("/", 1)[0].endswith(".dist-info")}


def metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return next(zf.read(n).decode() for n in zf.namelist() if n.endswith(f".dist-info/{name}"))


def requirements(wheel: Path) -> set[str]:
    requires = Parser().parsestr(metadata(wheel, "METADATA")).get_all("Requires-Dist") or []
    return {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in requires}


def test_the_core_wheel_holds_only_the_runtime_package(wheels: dict[str, Path]) -> None:
    assert top_level(wheels["flywheel"]) == {"flywheel"}
    requires = requirements(wheels["flywheel"])
    assert not {r for r in requires if r.startswith("flywheel")}, requires


@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_wheel_holds_only_its_package_and_its_console_script(wheels: dict[str, Path],
                                                                          svc: str) -> None:
    wheel = wheels[f"flywheel-{svc}"]
    assert top_level(wheel) == {f"flywheel_{svc}"}
    requires = requirements(wheel)
    assert {r for r in requires if r.startswith("flywheel")} == {"flywheel"}, requires
    assert f"flywheel-{svc} = flywheel_{svc}.__main__:main" in metadata(wheel, "entry_points.txt")


def runtime_modules() -> list[Path]:
    packages = [REPO / "flywheel", *(REPO / "services" / svc / f"flywheel_{svc}" for svc in SERVICES)]
    return [p for package in packages for p in sorted(package.rglob("*.py"))]


TOOLING = ("flywheel_dev", "tests", "conftest", "bench")


def tooling_references(path: Path) -> set[str]:
    """Imports of tooling or test code, and tooling modules named in strings (importlib.import_module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in TOOLING}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} if node.module.split(".")[0] in TOOLING else set()
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "flywheel_dev" in node.value:
            found.add(node.value)
    return found


def test_no_runtime_module_imports_tooling() -> None:
    modules = runtime_modules()
    assert len(modules) > 30
    offenders = {str(p.relative_to(REPO)): sorted(tooling_references(p)) for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_deploy_doc_lists_each_images_distributions_and_dependencies() -> None:
    """docs/deploy.md's "What each image contains" names what each pyproject declares."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    section = doc.split("## What each image contains", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(flywheel-\w+)` \|.*$", section, re.M)}
    assert set(rows) == {f"flywheel-{svc}" for svc in SERVICES} | {"flywheel-training"}
    for svc in SERVICES:
        project = tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())["project"]
        for requirement in project["dependencies"]:
            name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
            assert name in rows[f"flywheel-{svc}"], (svc, name)
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in core:
        assert re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0] in section, requirement
    assert "never installed in an image" in section and "--build-arg SERVICE=" in section
