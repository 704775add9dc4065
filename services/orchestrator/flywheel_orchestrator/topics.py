"""The orchestrator's place in the event map, derived from the catalogue (flywheel/catalogue.py)."""

from flywheel.catalogue import Service, consumed_by, produced_by, replayed_by

SERVICE = Service.ORCHESTRATOR
CONSUMES: tuple[str, ...] = consumed_by(SERVICE)
PRODUCES: tuple[str, ...] = produced_by(SERVICE)
# Read from the start on boot to rebuild run state.
REPLAYS: tuple[str, ...] = replayed_by(SERVICE)
