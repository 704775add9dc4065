"""Topics the monitor consumes and produces (names from the catalogue)."""

METRICS_TOPIC = "model.metrics-observed"
RETRAIN_TOPIC = "retrain.requested"
CONSUMES = (METRICS_TOPIC, "training.run-started", "training.run-succeeded", "training.run-failed",
            "training.run-superseded", "model.version-registered")
PRODUCES = (RETRAIN_TOPIC, "monitor.dead-letter")
