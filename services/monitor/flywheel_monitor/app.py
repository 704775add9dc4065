"""Assembly only: the Faust app, codec, publisher, dead letters, window tables, core and handlers, from settings."""

from __future__ import annotations

import faust

from flywheel.bootstrap import aws_client, build_codec
from flywheel.faust_app import DeadLetters, FaustPublisher, make_app
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.decoding import MillisDecoder
from flywheel_monitor.handlers import Backoff, MonitorHandlers, register
from flywheel_monitor.settings import MonitorSettings
from flywheel_monitor.statestore import ModelStates, S3RuleStates
from flywheel_monitor.topics import SERVICE
from flywheel_monitor.validation import TimeBounds
from flywheel_monitor.windows import DictWindowStore


def create_app(settings: MonitorSettings) -> faust.App:
    app = make_app(SERVICE, settings)
    codec = build_codec(settings)
    publisher = FaustPublisher(app, codec, SERVICE)
    dead_letters = DeadLetters(publisher)
    bounds = TimeBounds(max_skew_ms=int(settings.max_clock_skew_s * 1000),
                        max_window_ms=int(settings.max_observation_window_s * 1000))
    core = MonitorCore(settings.rule_set, DictWindowStore(), bounds=bounds)
    decoder = MillisDecoder(codec)  # timestamps as epoch ms: no datetime round trip per event
    states = (ModelStates(S3RuleStates(aws_client(settings, "s3"), settings.artifact_bucket), core)
              if settings.rule_state_in_s3 else None)
    handlers = MonitorHandlers(core, publisher, dead_letters, SERVICE, settings.metrics_max_models,
                               Backoff(settings.publish_retry_initial_s, settings.publish_retry_max_s),
                               states=states)

    register(app, settings, codec, handlers, decoder)
    return app

