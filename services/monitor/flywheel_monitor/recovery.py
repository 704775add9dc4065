"""Start-up recovery: known models and cooldowns rebuilt by reading topics from the beginning.

Faust changelog recovery on Tansu restores stale values (docs/decisions/0003-tansu-quirks.md), so the
monitor rebuilds what must survive a restart from the source of truth, the topics it replays
(topics.REPLAYS): every ModelVersionRegistered, then every RetrainRequested it emitted itself
(docs/decisions/0201-monitor-windows-as-cache-tables.md).
"""

from __future__ import annotations

from flywheel.codec import AvroCodec
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import read_to_end
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.topics import REGISTERED_TOPIC, REPLAYS, RETRAIN_TOPIC


def recover(core: MonitorCore, settings: FlywheelSettings, codec: AvroCodec, producer: str) -> tuple[int, int]:
    """Feed registrations, then this service's own retrain requests, into the core; returns the counts."""
    replay = read_to_end(settings, codec, REPLAYS, reader="monitor-recovery", timeout_s=settings.recovery_timeout_s)
    models = triggers = 0
    for record in replay.records(REGISTERED_TOPIC):
        models += core.register(record)
    for record in replay.records(RETRAIN_TOPIC):
        if record["envelope"]["producer"] == producer:
            core.restore_trigger(record)
            triggers += 1
    return models, triggers
