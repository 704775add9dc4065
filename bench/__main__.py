"""Run benchmark modules, keep each one's results in bench/results/<name>.json, rewrite docs/benchmarks.md.

    python -m bench                 # all, full size
    python -m bench --only codec    # one
    python -m bench --quick         # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BenchResult

# Each module exposes run(quick: bool) -> BenchResult | list[BenchResult].
BENCHES = ["codec", "ingest", "orchestrator", "monitor", "platform", "serving", "scale"]
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"


def machine_facts() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return [f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}", f"- commit: {commit or 'n/a'}",
            f"- cpu: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}"]


def save(name: str, results: list[BenchResult]) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": machine_facts(), "results": [dataclasses.asdict(r) for r in results]}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


def render() -> str:
    """docs/benchmarks.md from every saved result, in BENCHES order; each section says when it ran."""
    out = ["# Benchmarks", "", "Written by `python -m bench` (`make bench`), which runs every benchmark and",
           "rewrites this page; `python -m bench --only NAME` reruns one section. Ratios compare figures",
           "measured in the same run, as these machines are noisy.", ""]
    for name in BENCHES:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        for raw in payload["results"]:
            out += _section(BenchResult(**raw), payload["machine"])
    return "\n".join(out)


def _section(res: BenchResult, machine: list[str]) -> list[str]:
    out = [f"## {res.title}", "", f"Command: `{res.command}`", "", *machine, ""]
    if res.goal:
        out += [f"Goal: {res.goal}" + (f" — **{res.verdict}**" if res.verdict else ""), ""]
    if res.rows:
        cols = list(res.rows[0])
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in res.rows]
        out.append("")
    return out + [f"- {n}" for n in res.notes] + ([""] if res.notes else [])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", action="append", choices=BENCHES)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for name in args.only or BENCHES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"bench {name}: not written yet, skipped", file=sys.stderr)
            continue
        started = time.monotonic()
        print(f"bench {name}: running...", file=sys.stderr, flush=True)
        out = module.run(quick=args.quick)
        results = out if isinstance(out, list) else [out]
        for res in results if args.quick else []:
            res.command += " --quick"
        save(name, results)
        print(f"bench {name}: done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    DOC.write_text(render() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
