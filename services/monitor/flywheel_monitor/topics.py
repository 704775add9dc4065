"""Topics the monitor consumes and produces (names from the catalogue)."""

CONSUMES = ("model.metrics-observed", "training.run-started", "training.run-succeeded",
            "training.run-failed", "training.run-superseded", "model.version-registered")
PRODUCES = ("retrain.requested", "monitor.dead-letter")
