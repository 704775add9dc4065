"""Orchestrator: decides when to fine-tune and runs the training workflow (`flywheel-orchestrator`).

`flywheel-orchestrator` starts the service. The same console script is the image's entry point, so two
other uses go through it (docs/decisions/0014-flyte-remote.md):
- `flywheel-orchestrator flyte package|register ...`: register the workflow on Flyte (flyteregistry.py);
- `flywheel-orchestrator pyflyte-execute ...` (and the other pyflyte-* task entry points): a Flyte task pod
  runs the task container's args after the image's ENTRYPOINT, so they are handed to flytekit's command.
"""

import sys

from flywheel.service import run_service
from flywheel_orchestrator.app import create_app
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.topics import SERVICE

TASK_COMMANDS = ("pyflyte-execute", "pyflyte-fast-execute", "pyflyte-map-execute")


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in TASK_COMMANDS:
        import os
        import shutil
        from pathlib import Path

        beside = Path(sys.executable).parent / args[0]  # the console script of this interpreter's flytekit
        command = str(beside) if beside.exists() else shutil.which(args[0])
        if command is None:
            raise SystemExit(f"{args[0]} is not installed in this image")
        os.execv(command, args)  # the task process replaces this one (PID 1 keeps the signals)
    if args and args[0] == "flyte":
        from flywheel_orchestrator.flyteregistry import main as flyte_main

        raise SystemExit(flyte_main(args[1:]))
    run_service(SERVICE, OrchestratorSettings, create_app)


if __name__ == "__main__":
    main()
