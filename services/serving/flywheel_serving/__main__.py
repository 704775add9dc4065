"""`flywheel-serving`: settings, logs, the app, then uvicorn (an HTTP server, not a Faust worker)."""

from __future__ import annotations

from flywheel.service import prepare
from flywheel_serving.app import create_app
from flywheel_serving.settings import ServingSettings
from flywheel_serving.topics import SERVICE


def main() -> None:
    settings = prepare(SERVICE, ServingSettings)
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port, access_log=False,
                log_config=None, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
