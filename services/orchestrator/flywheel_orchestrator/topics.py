"""Topics the orchestrator consumes and produces (names from the catalogue)."""

CONSUMES = ("dataset.version-ready", "retrain.requested", "retrain.manual-requested")
PRODUCES = ("training.run-started", "training.run-succeeded", "training.run-failed",
            "training.run-superseded", "model.version-registered", "orchestrator.dead-letter")
# Read from the start on boot to rebuild run state (replay.py).
REPLAY = ("dataset.version-ready", "training.run-started", "training.run-succeeded", "training.run-failed",
          "training.run-superseded")
