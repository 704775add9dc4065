"""What every service's __main__ does: read settings, configure logs, build the app, run a Faust worker."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import faust
from pydantic import ValidationError

from flywheel import logs
from flywheel.settings import FlywheelSettings
from flywheel.topicadmin import TopicsMismatch, TopicsUnavailable, check_service_topics

EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: topics not there yet or no broker; a restart may find them
EXIT_CONFIG = 78  # EX_CONFIG: bad configuration, do not restart-loop blindly


def run_service(name: str, load_settings: Callable[[], FlywheelSettings],
                create_app: Callable[[Any], faust.App]) -> None:
    """Start a worker; a bad setting fails here, naming the field, before anything connects."""
    settings = prepare(name, load_settings)
    app = create_app(settings)
    logging.getLogger(name).info("starting", extra={"service": name, "kafka": settings.kafka_bootstrap,
                                                    "web_port": settings.web_port})
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False,
                          override_logging=False, quiet=True)
    worker.execute_from_commandline()


def prepare(name: str, load_settings: Callable[[], FlywheelSettings]) -> Any:
    """What every service does before it starts: settings validated (exit 78 naming the field), logging
    configured, the topics it touches checked against the catalogue (exit 78 on a mismatch, 75 when missing)."""
    try:
        settings = load_settings()
    except (ValidationError, ValueError) as exc:
        print(f"flywheel-{name}: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    logs.configure(settings.log_format, settings.log_level)
    refuse_mismatched_topics(name, settings)
    return settings


def refuse_mismatched_topics(name: str, settings: FlywheelSettings) -> None:
    """Exit before joining any group when a topic the service touches has other partitions than the catalogue
    (its keys would sit on other partitions than the ones every other service reads), or is missing."""
    try:
        check_service_topics(settings, name)
    except (TopicsMismatch, TopicsUnavailable) as exc:
        logging.getLogger(name).error("refusing to start: %s", exc, extra={"service": name})
        print(f"flywheel-{name}: refusing to start: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if isinstance(exc, TopicsMismatch) else EXIT_TEMPFAIL)
