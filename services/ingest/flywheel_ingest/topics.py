"""Topics ingest produces (it consumes S3 notifications from SQS, not Kafka)."""

CONSUMES: tuple[str, ...] = ()
PRODUCES = ("dataset.version-ready", "dataset.rejected", "ingest.dead-letter")
