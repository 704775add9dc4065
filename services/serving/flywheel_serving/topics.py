"""Serving's place in the event map, derived from the catalogue (flywheel/catalogue.py)."""

from flywheel.catalogue import Service, consumed_by, dead_letter_topic, produced_by, replayed_by

SERVICE = Service.SERVING
# Followed live by every replica from the end (no shared consumer group): each replica must see each swap.
CONSUMES: tuple[str, ...] = consumed_by(SERVICE)
PRODUCES: tuple[str, ...] = produced_by(SERVICE)
REPLAYS: tuple[str, ...] = replayed_by(SERVICE)  # none: the stage store is read at start-up instead
PROMOTED_TOPIC = "model.version-promoted"
ROLLED_BACK_TOPIC = "model.version-rolled-back"
# Registered versions are prefetched (downloaded, extracted) so that a promotion only has to load them.
REGISTERED_TOPIC = "model.version-registered"
LOAD_FAILED_TOPIC = "model.load-failed"
# Shadow evaluation (shadow.py): a candidate to shadow, and a rejection that ends a shadow.
SHADOWED_TOPIC = "model.version-shadowed"
REJECTED_TOPIC = "model.version-rejected"
# Feedback for a request another replica answered, handed to that replica (docs/decisions/0007-serving.md).
FORWARDED_TOPIC = "serving.feedback-forwarded"
DEAD_LETTER_TOPIC = dead_letter_topic(SERVICE).name
