"""Carry out the model lifecycle: decisions come from promotion.py, the stage store is flywheel.lifecycle (S3).

Every change is one conditional write of the model's stages document whose history entry carries the
causing event's id (`cause`). The event announcing it is built from that entry, so a redelivered request
finds its entry and re-announces it instead of changing the stages twice (at-least-once, idempotent).
Failures here are logged, never raised: a lifecycle problem must not stop the orchestrator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from flywheel import lifecycle as lc
from flywheel.events import now_ms
from flywheel_orchestrator import events
from flywheel_orchestrator.domain import RunSpec, Trigger
from flywheel_orchestrator.metrics import STAGE_CHANGES
from flywheel_orchestrator.promotion import (
    GATE,
    OPERATOR,
    PROBATION,
    GatePolicy,
    Verdict,
    judge,
    probation,
    shadow_verdict,
)

log = logging.getLogger("orchestrator")
Send = Callable[[str, dict[str, Any]], Awaitable[Any]]
CHAMPION_VERSION, CHAMPION_URI = "champion_version", "champion_uri"  # RunSpec.lineage keys


ReadRegistration = Callable[[str, str], "dict[str, Any] | None"]  # (model_id, run_id) -> registration.json


class Promotions:
    def __init__(self, store: lc.StageStore, send: Send, policy: GatePolicy,
                 read_registration: ReadRegistration | None = None) -> None:
        self.store, self.send, self.policy = store, send, policy
        self.read_registration = read_registration or (lambda model_id, run_id: None)

    async def champion(self, model_id: str) -> dict[str, str]:
        """The lineage entries naming the production version a new run is compared with ({} if none)."""
        try:
            stages = await asyncio.to_thread(self.store.read, model_id)
        except Exception:  # the run goes on without a comparison; the gate will then say why it cannot promote
            log.exception("could not read the stages of %s", model_id, extra={"model_id": model_id})
            return {}
        record = stages.production_record() if stages else None
        return {CHAMPION_VERSION: record.version, CHAMPION_URI: record.artifact_uri} if record else {}

    async def registered(self, spec: RunSpec, registration: dict[str, Any], causation: dict[str, Any],
                         cause: str) -> None:
        """A new version: record it as a candidate, let the gate judge it, store and announce the verdict.

        `cause` is the run's TrainingRunSucceeded event id, on the first try and when catching up at start-up."""
        version, at = spec.run_id, now_ms()

        def enter(stages: lc.ModelStages) -> lc.ModelStages:
            stages = lc.register(stages, version, registration["artifact_uri"], at=at,
                                 metrics=_numbers(registration.get("metrics")),
                                 dataset_version_id=spec.dataset_version_id,
                                 training_dataset_version_ids=tuple(spec.training_version_ids))
            return lc.nominate(stages, version) if stages.versions[version].stage == "registered" else stages

        def decide(stages: lc.ModelStages) -> lc.ModelStages:
            if lc.entry_caused_by(stages, cause) or stages.versions[version].stage not in lc.JUDGEABLE:
                return stages
            verdict = judge(stages, version, registration, spec.lineage.get(CHAMPION_VERSION) or None, self.policy)
            if verdict.promote and verdict.reason == GATE and self.policy.shadow:  # live evidence first (0013)
                return lc.start_shadow(stages, version, at=at, reason=GATE, evidence=verdict.evidence,
                                       extra={"cause": cause})
            apply = lc.promote if verdict.promote else lc.reject
            return apply(stages, version, at=at, reason=verdict.reason, evidence=verdict.evidence,
                         extra={"cause": cause})

        await self._change(spec.model_id, cause, causation, enter, decide, superseded=True)

    async def shadow_evaluated(self, record: dict[str, Any]) -> None:
        """One window of live paired counts from serving (model.shadow-evaluated): added to the candidate's
        totals once (by the event id), then the candidate is promoted, rejected, or keeps collecting."""
        model_id, version = record["model_id"], record.get("candidate_version") or ""
        causation, cause = record["envelope"], record["envelope"]["event_id"]
        counts = {"n": record.get("pairs", 0), "b": record.get("b", 0), "c": record.get("c", 0),
                  "production_correct": record.get("production_correct", 0),
                  "shadow_correct": record.get("candidate_correct", 0)}

        def change(stages: lc.ModelStages) -> lc.ModelStages:
            if lc.entry_caused_by(stages, cause):
                return stages
            shadowed = stages.shadow_record()
            if shadowed is None or shadowed.version != version:
                raise lc.IllegalTransition(f"{version!r} is not the candidate in shadow of {model_id!r} "
                                           f"({shadowed.version if shadowed else 'none'} is)")
            if record.get("production_version") != shadowed.shadow.get("against"):
                raise lc.IllegalTransition(f"window paired {version} with {record.get('production_version')}, "
                                           f"the shadow is against {shadowed.shadow.get('against')}")
            if any(int(v) < 0 for v in counts.values()) or counts["b"] + counts["c"] > counts["n"]:
                raise lc.IllegalTransition(f"inconsistent counts {counts}")
            stages = lc.add_shadow_window(stages, version, cause, counts)
            return self._decide_shadow(stages, version, cause)

        await self._change(model_id, cause, causation, change)

    async def shadow_timeouts(self, owns: Callable[[str], bool] = lambda model_id: True) -> None:
        """A candidate that collected too few live pairs within shadow_max_s (or whose production changed) is
        rejected; the cause is derived from the version, so every worker that checks writes it once."""
        if not self.policy.shadow:
            return
        try:
            models = await asyncio.to_thread(self.store.models)
        except Exception:
            log.exception("could not list the stage documents for shadow timeouts")
            return
        for model_id in models:
            if not owns(model_id):
                continue
            try:
                stages = await asyncio.to_thread(self.store.read, model_id)
            except Exception:
                log.exception("could not read the stages of %s", model_id, extra={"model_id": model_id})
                continue
            shadowed = stages.shadow_record() if stages else None
            if shadowed is None or shadow_verdict(stages, shadowed.version, now_ms(), self.policy) is None:
                continue
            cause = f"shadow-timeout:{model_id}:{shadowed.version}"

            def change(stages: lc.ModelStages, version: str = shadowed.version, cause: str = cause) -> lc.ModelStages:
                return stages if lc.entry_caused_by(stages, cause) else self._decide_shadow(stages, version, cause)

            await self._change(model_id, cause, {"event_id": None, "correlation_id": cause}, change)

    def _decide_shadow(self, stages: lc.ModelStages, version: str, cause: str) -> lc.ModelStages:
        verdict: Verdict | None = shadow_verdict(stages, version, now_ms(), self.policy)
        if verdict is None:
            return stages
        offline = next((h.get("evidence") or {} for h in reversed(stages.history)
                        if h.get("action") == "shadow" and h.get("version") == version), {})
        evidence = {**{f"offline_{k}": v for k, v in offline.items()}, **verdict.evidence}
        apply = lc.promote if verdict.promote else lc.reject
        return apply(stages, version, at=now_ms(), reason=verdict.reason, evidence=evidence, extra={"cause": cause})

    async def catch_up(self, last_succeeded: dict[str, tuple[RunSpec, dict[str, Any]]]) -> None:
        """At start-up: a model's newest succeeded run that the gate never decided on (the service stopped
        between registration and decision, or the version predates the stage store) is decided now."""
        for model_id, (spec, succeeded) in last_succeeded.items():
            try:
                stages = await asyncio.to_thread(self.store.read, model_id)
                record = stages.versions.get(spec.run_id) if stages else None
                if record is not None and record.stage not in lc.JUDGEABLE:
                    continue
                registration = await asyncio.to_thread(self.read_registration, model_id, spec.run_id)
            except Exception:
                log.exception("could not catch up on %s", spec.run_id, extra={"model_id": model_id})
                continue
            if registration is None:
                continue
            log.info("deciding on %s at start-up", spec.run_id, extra={"model_id": model_id, "run_id": spec.run_id})
            await self.registered(spec, registration, succeeded, succeeded["event_id"])

    async def stage_change(self, record: dict[str, Any]) -> None:
        """An operator's `flywheel models promote|rollback`; a request the stages do not allow is logged, ignored."""
        model_id, action, version = record["model_id"], record.get("action"), record.get("model_version")
        causation, words = record["envelope"], record.get("reason") or ""
        extra = {"cause": causation["event_id"], "detail": words}

        def change(stages: lc.ModelStages) -> lc.ModelStages:
            if lc.entry_caused_by(stages, extra["cause"]):
                return stages
            if action == "promote" and version:
                metrics = _numbers(stages.versions[version].metrics) if version in stages.versions else {}
                return lc.promote(stages, version, at=now_ms(), reason=OPERATOR, evidence=metrics, extra=extra)
            if action == "rollback":
                return lc.rollback(stages, at=now_ms(), reason=OPERATOR, extra=extra)
            raise lc.IllegalTransition(f"action must be promote (with a model_version) or rollback, got {action!r}"
                                       f"{'' if version else ' without a version'}")

        await self._change(model_id, extra["cause"], causation, change)

    async def breach(self, trigger: Trigger) -> None:
        """A breach or drift of a version still in probation rolls production back to the version before it."""
        cause = trigger.event_id

        def change(stages: lc.ModelStages) -> lc.ModelStages:
            if lc.entry_caused_by(stages, cause):
                return stages
            check = probation(stages, trigger.kind, trigger.evidence, now_ms(), self.policy)
            if not check.rollback:
                log.info("no rollback: %s", check.reason, extra={"model_id": trigger.model_id,
                         "event_id": cause, "correlation_id": trigger.causation.get("correlation_id")})
                return stages
            return lc.rollback(stages, at=now_ms(), reason=PROBATION, evidence=check.evidence,
                               extra={"cause": cause, "detail": check.reason})

        await self._change(trigger.model_id, cause, trigger.causation, change)

    async def _change(self, model_id: str, cause: str, causation: dict[str, Any],
                      *steps: Callable[[lc.ModelStages], lc.ModelStages], superseded: bool = False) -> None:
        ids = {"model_id": model_id, "event_id": cause, "correlation_id": causation.get("correlation_id")}
        try:
            for step in steps:
                stages = await asyncio.to_thread(self.store.update, model_id, step)
        except lc.IllegalTransition as exc:
            log.warning("stage change ignored: %s", exc, extra={**ids, "outcome": "ignored", "reason": str(exc)})
            return
        except Exception:  # S3 down, or a conflict that outlasted the retries: logged, the service goes on
            log.exception("stage store update failed for %s", model_id, extra={**ids, "outcome": "failed"})
            return
        causes = (f"{cause}/superseded", cause) if superseded else (cause,)  # a candidate a new shadow replaced
        for entry in filter(None, (lc.entry_caused_by(stages, c) for c in causes)):
            topic, record = events.stage_event(stages, entry, causation)
            await self.send(topic, record)
            STAGE_CHANGES.labels(entry["action"], entry["reason"] if entry["action"] != "reject" else GATE).inc()
            log.info("%s %s: %s", entry["action"], entry["version"], entry["reason"], extra={
                **ids, "outcome": entry["action"], "model_version": entry["version"],
                "from_version": entry.get("from_version"), "evidence": entry.get("evidence")})


def _numbers(values: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (values or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}
