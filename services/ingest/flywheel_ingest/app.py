"""Wiring: build the Faust app and adapters from settings."""

from __future__ import annotations

import faust

from flywheel.faust_app import make_app
from flywheel_ingest.settings import IngestSettings

SERVICE = "ingest"


def create_app(settings: IngestSettings) -> faust.App:
    return make_app(SERVICE, settings)
