"""The monitor's place in the event map, derived from the catalogue (flywheel/catalogue.py)."""

from flywheel.catalogue import Service, consumed_by, produced_by, replayed_by

SERVICE = Service.MONITOR
CONSUMES: tuple[str, ...] = consumed_by(SERVICE)
PRODUCES: tuple[str, ...] = produced_by(SERVICE)
# Read from the start on boot: known models (registrations) and cooldowns (its own retrain requests).
REPLAYS: tuple[str, ...] = replayed_by(SERVICE)
METRICS_TOPIC = "model.metrics-observed"
RETRAIN_TOPIC = "retrain.requested"
REGISTERED_TOPIC = "model.version-registered"
