"""`flywheel models list|describe|promote|rollback`: the stage store read directly, stage changes asked for.

`list` and `describe` read the stages documents (flywheel/lifecycle.py) in the artifact bucket. `promote`
and `rollback` publish ModelStageChangeRequested on `model.stage-change-requested` (producer: operator);
the orchestrator applies it and announces the outcome (model.version-promoted / -rolled-back). They check
the request against the stage store first, so an unknown version or a rollback with nothing before it is
refused here with a reason (the orchestrator refuses it again if the stages changed in between).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from flywheel.bootstrap import aws_client, build_codec
from flywheel.clistyle import paint
from flywheel.events import envelope
from flywheel.lifecycle import PROMOTABLE, ModelStages, StageStore
from flywheel.publish import publish_for_command
from flywheel.settings import FlywheelSettings

TOPIC = "model.stage-change-requested"
EXIT_USAGE = 2
STAGE_COLOURS = {"production": "green", "rejected": "red", "candidate": "cyan"}


class ModelsSettings(FlywheelSettings):
    artifact_bucket: str = "flywheel-artifacts"  # FLYWHEEL_ARTIFACT_BUCKET, as the orchestrator's


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="model versions and stages: list, describe, promote, rollback")
    models.set_defaults(func=cmd_models)
    msub = models.add_subparsers(dest="models_command", required=True)
    listing = msub.add_parser("list", help="every model: production version, versions by stage, last change")
    listing.add_argument("--json", action="store_true", help="one JSON line per model")
    describe = msub.add_parser("describe", help="one model: versions, stages, metrics and the decision history")
    describe.add_argument("model_id")
    describe.add_argument("--json", action="store_true", help="the stages document as stored")
    promote = msub.add_parser("promote", help="ask the orchestrator to put a version in production")
    promote.add_argument("model_id")
    promote.add_argument("version")
    promote.add_argument("--reason", default="", help="recorded in the stage history")
    rollback = msub.add_parser("rollback", help="ask the orchestrator to restore the previous production version")
    rollback.add_argument("model_id")
    rollback.add_argument("--reason", default="", help="recorded in the stage history")


def cmd_models(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    config = ModelsSettings()
    store = StageStore(aws_client(config, "s3"), config.artifact_bucket)
    command = args.models_command
    if command == "list":
        return _list(store, args.json)
    stages = store.read(args.model_id)
    if command == "describe":
        return _describe(stages, args.model_id, args.json)
    refusal = check_request(stages, args.model_id, command, getattr(args, "version", None))
    if refusal:
        print(f"flywheel models {command}: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    return _request(config, args.model_id, command, getattr(args, "version", None), args.reason)


def check_request(stages: ModelStages | None, model_id: str, action: str, version: str | None) -> str | None:
    """Why the stage store refuses the request now, or None."""
    if stages is None:
        return f"no model {model_id!r} in the stage store (see `flywheel models list`)"
    if action == "promote":
        record = stages.versions.get(version or "")
        if record is None:
            return f"model {model_id!r} has no version {version!r}; known: {', '.join(stages.versions) or 'none'}"
        if record.stage not in PROMOTABLE:
            return f"{version} is already {record.stage}"
        return None
    if stages.production is None:
        return f"model {model_id!r} has no production version to roll back"
    if stages.previous_production() is None:
        return f"model {model_id!r} has no previous production version to roll back to"
    return None


def _request(settings: FlywheelSettings, model_id: str, action: str, version: str | None, reason: str) -> int:
    codec = build_codec(settings)
    record = {"envelope": envelope("cli"), "model_id": model_id, "action": action, "model_version": version,
              "reason": reason or f"{action} asked for by an operator"}
    if publish_for_command(settings, codec, TOPIC, record, f"models {action}"):
        return 1
    print(paint(f"asked; the orchestrator applies it: `flywheel models describe {model_id}`", "dim"), file=sys.stderr)
    return 0


def _list(store: StageStore, as_json: bool) -> int:
    rows = [("MODEL", "PRODUCTION", "PROMOTED AT", "ACCURACY", "VERSIONS", "LAST CHANGE")]
    for model_id in store.models():
        stages = store.read(model_id)
        if stages is None:
            continue
        if as_json:
            print(json.dumps(list_line(stages)))
            continue
        prod, last = stages.production_record(), (stages.history or [{}])[-1]
        counts = list_line(stages)["stages"]
        rows.append((model_id, prod.version if prod else "-", _time(prod.promoted_at) if prod else "-",
                     _metric(prod.metrics, "accuracy") if prod else "-",
                     ", ".join(f"{n} {stage}" for stage, n in counts.items()),
                     f"{last.get('action', '-')} {last.get('version', '')} {_time(last.get('at'))}".strip()))
    if not as_json:
        _table(rows)
        print(paint(f"{len(rows) - 1} model(s)", "dim"))
    return 0


def list_line(stages: ModelStages) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for record in stages.versions.values():
        counts[record.stage] = counts.get(record.stage, 0) + 1
    return {"model_id": stages.model_id, "production": stages.production, "generation": stages.generation,
            "stages": counts, "versions": len(stages.versions)}


def _describe(stages: ModelStages | None, model_id: str, as_json: bool) -> int:
    if stages is None:
        print(f"flywheel models describe: no model {model_id!r} in the stage store", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(stages.to_dict(), indent=2))
        return 0
    print(paint(f"{model_id}", "bold") + f"  production: {stages.production or '-'}  generation: {stages.generation}")
    rows = [("VERSION", "STAGE", "ACCURACY", "MACRO F1", "REGISTERED", "PROMOTED", "DATASET")]
    for record in sorted(stages.versions.values(), key=lambda r: r.registered_at, reverse=True):
        rows.append((record.version, record.stage, _metric(record.metrics, "accuracy"),
                     _metric(record.metrics, "macro_f1"), _time(record.registered_at), _time(record.promoted_at),
                     record.dataset_version_id or "-"))
    _table(rows, stage_column=1)
    print(paint("\nhistory", "bold"))
    history = [("AT", "ACTION", "VERSION", "FROM", "REASON", "EVIDENCE")]
    history += [(_time(h.get("at")), h["action"], h["version"], h.get("from_version") or "-",
                 _reason(h), _evidence(h.get("evidence") or {})) for h in stages.history]
    _table(history)
    return 0


def _reason(entry: dict[str, Any]) -> str:
    detail = entry.get("detail")
    return f"{entry.get('reason', '')}: {detail}" if detail else str(entry.get("reason", ""))


def _evidence(evidence: dict[str, Any]) -> str:
    keys = ("challenger_accuracy", "champion_accuracy", "delta", "p_value", "b", "c", "n", "observed_value",
            "threshold", "seconds_since_promotion")
    shown = [f"{k}={evidence[k]:.4g}" for k in keys if isinstance(evidence.get(k), int | float)]
    return " ".join(shown) or "-"


def _metric(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _time(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _table(rows: list[tuple[str, ...]], stage_column: int | None = None) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        colour = STAGE_COLOURS.get(row[stage_column]) if stage_column is not None and n else None
        print(paint(line, "bold") if n == 0 else paint(line, colour) if colour else line)
