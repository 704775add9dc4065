"""Ingest's place in the event map, derived from the catalogue (flywheel/catalogue.py).

Ingest consumes S3 notifications from SQS and lists S3, not Kafka: it consumes and replays no topic.
"""

from flywheel.catalogue import Service, consumed_by, produced_by, replayed_by

SERVICE = Service.INGEST
CONSUMES: tuple[str, ...] = consumed_by(SERVICE)
PRODUCES: tuple[str, ...] = produced_by(SERVICE)
REPLAYS: tuple[str, ...] = replayed_by(SERVICE)
