"""`flywheel demo` (the README's `make run`): the real loop on the local stack, with a timeline.

Base data -> validated dataset -> real fine-tune -> registered -> promoted (first version) -> serving loads
it -> live traffic with feedback -> measured live accuracy -> the traffic drifts (a new product line) ->
live accuracy drops, the accuracy and drift rules fire -> serving's harvest writes the labelled feedback
as a new dataset version, ingest validates it -> a challenger is fine-tuned on the base data + that feedback
and compared with the champion on the same held-out rows -> promoted with the gate's evidence -> serving
swaps -> live accuracy recovers.

Which data the retrain uses: the orchestrator's training-data policy (docs/decisions/0012-retrain-data-policy.md),
by default the newest base (non-feedback) version plus the feedback versions that arrived after it. The
challenger here is trained on base v1 + the harvested feedback (live traffic of both product lines, labelled
by the application), one composed training manifest under the run's prefix. A breach that arrives before the
feedback version starts a run on what is then known (the base data alone); it runs to its end and the gate
judges it, while the feedback version queues behind it (feedback never supersedes). The timeline says
which happened and how many rows each part gave.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.bootstrap import build_codec
from flywheel.settings import FlywheelSettings
from flywheel_dev.datasets import split, upload_dataset
from flywheel_dev.demodata import demo_examples
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Seen, Timeline
from flywheel_dev.timeline_view import Printer, print_lineage
from flywheel_dev.traffic import Traffic
from flywheel_orchestrator.trainingset import manifest_key

MODEL_ID = "support-intent"
ACCURACY_RULE, DRIFT_RULE = "accuracy-low", "input-drift"
NEW_LINE_SHARE = 0.75  # of the traffic after the new product line launches

# The monitor's rules for this local platform, sized for the traffic below (about 50 labelled texts a
# second): the shipped defaults (docs/monitor.md) are sized for production volumes. The cooldowns outlast
# the demo, so each rule asks once per version.
DEMO_RULES: dict[str, Any] = {
    "rules": [{"name": ACCURACY_RULE, "metric": "accuracy", "aggregation": "mean", "comparator": "lt",
               "threshold": 0.75, "window_s": 3, "min_samples": 45, "consecutive_windows": 1,
               "hysteresis": 0.05, "cooldown_s": 900}],
    "drift": {"name": DRIFT_RULE, "window_s": 6, "min_samples": 100, "psi_threshold": 0.2, "ks_alpha": 0.01,
              "correction": "holm", "cooldown_s": 900},
}
# Settings only one service reads. Serving: 2 s live-metric windows; the harvest writes a feedback dataset
# version every HARVEST_ROWS labelled texts (never on a timer during the demo); one torch thread, as a
# fine-tune runs beside it on this 2-core machine.
HARVEST_ROWS = 480
# The orchestrator's training-data policy (docs/decisions/0012), capped for this 2-core demo: base v1 + the
# newest feedback version (400 + 480 rows); an older feedback version is left out rather than growing each
# challenger's fine-tune while the next feedback version is already being harvested.
TRAINING_MAX_ROWS = 900
DEMO_SERVICE_ENV: dict[str, dict[str, str]] = {
    "orchestrator": {"FLYWHEEL_MODEL_POLICIES": json.dumps({MODEL_ID: {"training_data": {
        "max_rows": TRAINING_MAX_ROWS}}})},
    "monitor": {"FLYWHEEL_RULE_SET": json.dumps(DEMO_RULES)},
    "serving": {"FLYWHEEL_METRICS_WINDOW_S": "2", "FLYWHEEL_METRICS_MIN_SAMPLES": "20",
                "FLYWHEEL_HARVEST_MAX_ROWS": str(HARVEST_ROWS), "FLYWHEEL_HARVEST_INTERVAL_S": "3600",
                "FLYWHEEL_TORCH_THREADS": "1", "FLYWHEEL_MAX_WAIT_MS": "5", "FLYWHEEL_REPLICA_ID": "local"},
}
# Texts per second; slower while a fine-tune shares the cores, so the next feedback version (HARVEST_ROWS
# texts) takes four minutes to fill and does not supersede a challenger's fine-tune (base + feedback rows).
RATE, TRAINING_RATE = 50.0, 2.0


@dataclass
class Live:
    """Measured live accuracy of one version over a span of its windows (serving's ModelMetricsObserved)."""

    version: str
    accuracy: float
    samples: int
    windows: int


@dataclass
class Loop:
    """What the scenario saw, step by step (the e2e test asserts on it)."""

    seen: dict[str, Seen] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    swaps: list[tuple[str | None, str, float]] = field(default_factory=list)  # (from, to, at)
    feedback_lines: dict[str, int] = field(default_factory=dict)
    training_set: dict[str, Any] = field(default_factory=dict)  # the challenger's composed training manifest


class Scenario:
    """The demo's steps; each waits for the platform's own events, never for a fixed sleep."""

    def __init__(self, stack: LocalStack, platform: Platform, timeline: Timeline, printer: Printer,
                 examples: int, train_timeout: float) -> None:
        self.stack, self.platform, self.timeline, self.printer = stack, platform, timeline, printer
        self.examples, self.train_timeout = examples, train_timeout
        self.s3 = stack.client("s3")
        self.loop = Loop()
        self.traffic: Traffic | None = None
        self._swapped = threading.Condition()

    def step(self, text: str) -> None:
        self.printer.step(text)

    def note(self, text: str) -> None:
        self.printer.note(time.monotonic() - self.timeline.started, text)

    # --- data and training ------------------------------------------------------------------------------
    def land_base_data(self) -> Seen:
        self.step(f"uploading dataset v1 ({self.examples} labelled support messages of the shop line, some "
                  f"ambiguous, some mislabelled) to s3://{self.stack.resources.data_bucket}/datasets/{MODEL_ID}/v1/")
        prefix = upload_dataset(self.s3, self.stack.resources.data_bucket, MODEL_ID, "v1",
                                split(demo_examples(self.examples, seed=1), 2)).prefix
        ready = self.timeline.wait_for("DatasetVersionReady", lambda s: s.get("prefix") == prefix, 60)[0]
        self.loop.seen["v1"] = ready
        return ready

    def registered(self, dataset: Seen) -> Seen:
        ds = dataset.get("dataset_version_id")
        self.step(f"fine-tuning on dataset {ds[:12]} (progress from the orchestrator below)")
        return self.timeline.wait_for("ModelVersionRegistered", lambda s: s.get("dataset_version_id") == ds,
                                      self.train_timeout)[0]

    def decision(self, model: Seen) -> Seen:
        """The gate's verdict on a registered version: ModelVersionPromoted or ModelVersionRejected."""
        version = model.get("model_version")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name in ("ModelVersionPromoted", "ModelVersionRejected"):
                found = self.timeline.matching(name, lambda s: s.get("model_version") == version)
                if found:
                    return found[0]
            time.sleep(0.1)
        raise TimeoutError(f"no promotion or rejection of {version} within 60 s of its registration")

    # --- serving and traffic ----------------------------------------------------------------------------
    def _on_new_version(self, previous: str | None, version: str) -> None:
        at = time.monotonic() - self.timeline.started
        with self._swapped:
            self.loop.swaps.append((previous, version, at))
            self._swapped.notify_all()
        if previous is None:
            self.note(f"serving answers with {version} (first answer the application got)")
        else:
            self.note(f"serving swapped {previous} -> {version}: first answer from the new version")

    def wait_answering(self, version: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        with self._swapped:
            while not any(to == version for _, to, _ in self.loop.swaps):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"serving did not answer with {version} within {timeout:.0f}s")
                self._swapped.wait(min(left, 0.5))

    def start_traffic(self, version: str) -> Traffic:
        url = self.platform.procs["serving"].url
        self.step(f"serving loads {version}; the application starts sending OIP v2 requests to {url} and "
                  "reports the true label of every answer")
        self._wait_ready(url, timeout=90)
        self.traffic = Traffic(url, MODEL_ID, rate=RATE, on_new_version=self._on_new_version).start()
        self.wait_answering(version)
        return self.traffic

    def _wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/v2/models/{MODEL_ID}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"serving did not load {MODEL_ID} within {timeout:.0f}s")

    def live_accuracy(self, key: str, version: str, since_ms: int, samples: int, timeout: float = 60.0) -> Live:
        """Wait until serving's accuracy windows of `version` that started at or after `since_ms` hold
        `samples` labelled texts; their pooled accuracy."""

        def windows() -> list[Seen]:
            return self.timeline.matching("ModelMetricsObserved", lambda s: s.get("metric") == "accuracy"
                                          and s.get("model_version") == version
                                          and _ms(s.get("window_start")) >= since_ms)

        deadline = time.monotonic() + timeout
        while True:
            found = windows()
            n = sum(s.get("sample_count") for s in found)
            if n >= samples:
                live = Live(version, sum(s.get("value") * s.get("sample_count") for s in found) / n, n, len(found))
                self.loop.live[key] = live
                return live
            if time.monotonic() > deadline:
                raise TimeoutError(f"serving measured {n} labelled answers of {version} within {timeout:.0f}s; "
                                   f"waited for {samples}")
            time.sleep(0.2)

    # --- the loop -------------------------------------------------------------------------------------
    def first_model(self) -> Seen:
        first = self.registered(self.land_base_data())
        self.loop.seen["first"] = first
        promoted = self.decision(first)
        if promoted.name != "ModelVersionPromoted":
            raise TimeoutError(f"the first version was not promoted: {promoted.get('reason')}")
        self.loop.seen["first_promoted"] = promoted
        return first

    def healthy_traffic(self, version: str) -> Live:
        since = _now_ms()
        self.start_traffic(version)
        live = self.live_accuracy("before", version, since, samples=100)
        self.step(f"live accuracy of {version}, measured from feedback: {live.accuracy:.3f} over {live.samples} "
                  f"labelled answers ({live.windows} window{'s' if live.windows != 1 else ''})")
        return live

    def drift(self, version: str) -> tuple[Live, Seen, Seen]:
        assert self.traffic is not None
        self.step(f"the new product line (home EV chargers) launches: {NEW_LINE_SHARE:.0%} of the messages now "
                  "use its vocabulary and label mix")
        since = _now_ms()
        self.traffic.drift(NEW_LINE_SHARE)
        by_rule = lambda rule: lambda s: s.get("rule") == rule and s.get("model_version") == version  # noqa: E731
        accuracy = self.timeline.wait_for("RetrainRequested", by_rule(ACCURACY_RULE), 90)[0]
        drifted = self.timeline.wait_for("RetrainRequested", by_rule(DRIFT_RULE), 90)[0]
        live = self.live_accuracy("drifted", version, since, samples=60)
        self.loop.seen["accuracy_breach"], self.loop.seen["drift"] = accuracy, drifted
        self.step(f"live accuracy of {version} on the drifted traffic: {live.accuracy:.3f} over {live.samples} "
                  f"labelled answers; the monitor asked for a retrain twice ({ACCURACY_RULE}: "
                  f"{accuracy.get('observed_value'):.3f} < {accuracy.get('threshold')}; {DRIFT_RULE}: "
                  f"{accuracy_drift_detail(drifted)})")
        return live, accuracy, drifted

    def feedback_dataset(self) -> Seen:
        """The first dataset version serving's harvest wrote from labelled feedback, validated by ingest."""
        self.step(f"serving's harvest writes the labelled feedback as a dataset version (every {HARVEST_ROWS} "
                  "labelled texts); ingest validates it like any data")
        ready = self.timeline.wait_for("DatasetVersionReady", _is_feedback, 120)[0]
        assert self.traffic is not None
        self.traffic.set_rate(TRAINING_RATE)
        self.note(f"traffic slowed to {TRAINING_RATE:.0f} texts/s while a fine-tune shares the two cores")
        return ready

    def _feedback_versions(self) -> dict[str, Seen]:
        return {s.get("dataset_version_id"): s for s in self.timeline.matching("DatasetVersionReady", _is_feedback)}

    def lines_in(self, dataset: Seen) -> dict[str, int]:
        """Product lines of a feedback version's rows, from their request ids (the application knows them)."""
        request_ids: list[str] = []
        bucket, prefix = dataset.get("bucket"), dataset.get("prefix")
        for obj in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            if obj["Key"].endswith(".jsonl"):
                body = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
                rows = [json.loads(line) for line in body.splitlines() if line.strip()]
                request_ids += sorted({r["request_id"] for r in rows})
        assert self.traffic is not None
        return self.traffic.lines_of(request_ids)

    def challenger(self) -> tuple[Seen, Seen]:
        """The first version registered from a feedback dataset version, and the gate's verdict on it."""
        self.step("fine-tuning a challenger on base v1 + the feedback versions after it (progress from the "
                  "orchestrator below)")
        model = self.timeline.wait_for("ModelVersionRegistered",
                                       lambda s: s.get("dataset_version_id") in self._feedback_versions(),
                                       self.train_timeout)[0]
        dataset = self._feedback_versions()[model.get("dataset_version_id")]
        self.loop.seen["challenger"], self.loop.seen["feedback"] = model, dataset
        self.loop.feedback_lines = self.lines_in(dataset)
        lines = ", ".join(f"{n} {line}" for line, n in sorted(self.loop.feedback_lines.items()))
        self.step(f"challenger {model.get('model_version')} learnt from feedback version "
                  f"{dataset.get('dataset_version_id')[:12]}: {dataset.get('row_count')} labelled live texts "
                  f"({lines}) at s3://{dataset.get('bucket')}/{dataset.get('prefix')}")
        self.step(self.training_set(model))
        verdict = self.decision(model)
        self.loop.seen["verdict"] = verdict
        ev = verdict.get("evidence") or {}
        self.step(f"gate: challenger {ev.get('challenger_accuracy', 0):.3f} vs champion "
                  f"{ev.get('champion_accuracy', 0):.3f} on the same {ev.get('n', 0):.0f} held-out rows, McNemar "
                  f"b={ev.get('b', 0):.0f} c={ev.get('c', 0):.0f} p={ev.get('p_value', 1):.1e} -> "
                  f"{'promoted' if verdict.name == 'ModelVersionPromoted' else 'rejected'} ({verdict.get('reason')})")
        return model, verdict

    def training_set(self, model: Seen) -> str:
        """What the run trained on: its composed training manifest (base + feedback), in rows per version."""
        bucket = self.stack.resources.artifact_bucket
        key = manifest_key(MODEL_ID, model.get("model_version"))
        composed = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        self.loop.training_set = composed
        parts = " + ".join(f"{v['row_count']} {'feedback' if v['feedback'] else 'base'} "
                           f"({v['dataset_version_id'][:12]})" for v in composed["versions"])
        return f"its training set: {parts} = {composed['row_count']} rows (s3://{bucket}/{key})"

    def recovery(self, version: str) -> Live:
        assert self.traffic is not None
        self.wait_answering(version)
        self.traffic.set_rate(RATE)
        live = self.live_accuracy("after", version, _now_ms(), samples=120)
        before = self.loop.live.get("drifted")
        self.step(f"live accuracy of {version} on the same traffic: {live.accuracy:.3f} over {live.samples} "
                  f"labelled answers" + (f" (was {before.accuracy:.3f} before the swap)" if before else ""))
        return live

    def play(self) -> Loop:
        first = self.first_model()
        v1 = first.get("model_version")
        self.healthy_traffic(v1)
        self.drift(v1)
        self.describe_retrain(self.feedback_dataset())
        model, verdict = self.challenger()
        if verdict.name != "ModelVersionPromoted":
            raise TimeoutError(f"the challenger was rejected: {verdict.get('reason')}")
        self.recovery(model.get("model_version"))
        return self.loop

    def describe_retrain(self, feedback: Seen) -> None:
        """Which run the breach started, and on which data (the orchestrator trains on one version)."""
        base = self.loop.seen["v1"].get("dataset_version_id")
        fid = str(feedback.get("dataset_version_id"))[:12]
        runs = self.timeline.matching("TrainingRunStarted", lambda s: s.get("trigger") in {"METRIC_BREACH", "DRIFT"})
        if runs and runs[0].get("dataset_version_id") == base:
            self.step(f"the breach's retrain {runs[0].get('run_id')} started on the newest version then known, the "
                      f"base data v1; feedback version {fid} ({feedback.get('row_count')} labelled live texts) "
                      "queues behind it (feedback never supersedes a run)")
        elif runs:
            self.step(f"the breach's retrain {runs[0].get('run_id')} runs on feedback version {fid}")
        else:
            self.step(f"feedback version {fid} arrived before the breach: its run covers the retrain requests")
        self.step("retrain data: the newest base version (v1) + the feedback versions that arrived after it "
                  "(the orchestrator's training-data policy)")


def _is_feedback(seen: Seen) -> bool:
    return "/feedback-" in str(seen.get("prefix"))


def accuracy_drift_detail(drifted: Seen) -> str:
    stats = drifted.get("statistics") or {}
    metric = str(drifted.get("metric", ""))
    feature = metric.removeprefix("feature:")
    psi = stats.get(f"psi:{feature}", drifted.get("observed_value"))
    p = stats.get(f"ks_p_adjusted:{feature}")
    return f"{feature} PSI {psi:.2f}" + (f", adjusted KS p {p:.1e}" if p is not None else "")


def _ms(value: Any) -> int:
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return int(value or 0)


def _now_ms() -> int:
    return int(time.time() * 1000)


def settings_for(stack: LocalStack) -> FlywheelSettings:
    return FlywheelSettings(kafka_bootstrap=stack.kafka_bootstrap, aws_endpoint_url=stack.aws_endpoint,
                            kafka_fetch_max_wait_ms=10, kafka_session_timeout_s=6)


def demo_platform(stack: LocalStack, workdir: Path, extra_env: dict[str, str] | None = None) -> Platform:
    return Platform(stack, workdir, extra_env=dict(extra_env or {}), service_env=DEMO_SERVICE_ENV)


def follow_log(path: Path, printer: Printer, stop: threading.Event,
               keep: Callable[[dict[str, Any]], bool]) -> threading.Thread:
    """Show the orchestrator's training progress lines as they are written."""

    def run() -> None:
        while not path.exists() and not stop.is_set():
            time.sleep(0.2)
        with path.open() as fh:
            while not stop.is_set():
                line = fh.readline()
                if not line:
                    time.sleep(0.2)
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if keep(entry):
                    printer.progress(entry)

    thread = threading.Thread(target=run, daemon=True, name="follow-log")
    thread.start()
    return thread


def is_progress(entry: dict[str, Any]) -> bool:
    return "progress" in str(entry.get("msg", "")).lower()


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the services and the stack are stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    printer = Printer(io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True))  # noqa: SIM115
    printer.step("starting the local stack (Tansu + moto) and the four services")
    with LocalStack(log_dir=workdir) as stack, demo_platform(stack, workdir, dict(args.env or [])) as platform:
        stop = threading.Event()
        follow_log(platform.procs["orchestrator"].log_path, printer, stop, is_progress)
        timeline = Timeline(settings_for(stack), build_codec(settings_for(stack)), printer.event)
        scenario = Scenario(stack, platform, timeline, printer, args.examples, args.train_timeout)
        try:
            loop = scenario.play()
            printer.summary(timeline.events, platform, stack)
            print_lineage(printer, timeline.events, loop.seen["challenger"])
        except TimeoutError as exc:
            printer.failure(str(exc), workdir)
            return 1
        finally:
            if scenario.traffic is not None:
                scenario.traffic.stop()
            stop.set()
            timeline.close()
        if args.keep_running:
            printer.step("platform left running; Ctrl-C stops it")
            _wait_forever()
    return 0


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
