"""`flywheel-serving`: settings, logs, the app, then uvicorn (an HTTP server, not a Faust worker)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from flywheel import logs
from flywheel.service import EXIT_CONFIG
from flywheel_serving.app import create_app
from flywheel_serving.settings import ServingSettings
from flywheel_serving.topics import SERVICE


def main() -> None:
    try:
        settings = ServingSettings()
    except (ValidationError, ValueError) as exc:
        print(f"flywheel-{SERVICE}: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    logs.configure(settings.log_format, settings.log_level)
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port, access_log=False,
                log_config=None, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
