"""Orchestrator: decides when to fine-tune and runs the training workflow (`flywheel-orchestrator`)."""

from flywheel.service import run_service
from flywheel_orchestrator.app import create_app
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.topics import SERVICE


def main() -> None:
    run_service(SERVICE, OrchestratorSettings, create_app)


if __name__ == "__main__":
    main()
