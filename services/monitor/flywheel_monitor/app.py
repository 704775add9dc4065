"""Assembly only: the Faust app, codec, publisher, dead letters, window tables, core and handlers, from settings."""

from __future__ import annotations

import faust

from flywheel.bootstrap import build_codec
from flywheel.faust_app import DeadLetters, FaustPublisher, make_app
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.decoding import MillisDecoder
from flywheel_monitor.handlers import Backoff, MonitorHandlers, register
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.tables import FaustWindowStore
from flywheel_monitor.topics import SERVICE
from flywheel_monitor.validation import TimeBounds


def window_sizes(settings: MonitorSettings) -> set[int]:
    rules = settings.rule_set
    return {r.window_ms for r in rules.rules} | ({rules.drift.window_ms} if rules.drift else set())


def create_app(settings: MonitorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    publisher = FaustPublisher(app, codec, SERVICE)
    dead_letters = DeadLetters(publisher)
    bounds = TimeBounds(max_skew_ms=int(settings.max_clock_skew_s * 1000),
                        max_window_ms=int(settings.max_observation_window_s * 1000))
    core = MonitorCore(settings.rule_set, FaustWindowStore(app, window_sizes(settings)), bounds=bounds)
    decoder = MillisDecoder(codec)  # timestamps as epoch ms: no datetime round trip per event
    handlers = MonitorHandlers(core, publisher, dead_letters, SERVICE, settings.metrics_max_models,
                               Backoff(settings.publish_retry_initial_s, settings.publish_retry_max_s))

    register(app, settings, codec, handlers, decoder)
    return app
