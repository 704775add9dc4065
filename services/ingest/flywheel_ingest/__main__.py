from flywheel.service import run_service
from flywheel_ingest.app import create_app
from flywheel_ingest.settings import IngestSettings
from flywheel_ingest.topics import SERVICE


def main() -> None:
    run_service(SERVICE, IngestSettings, create_app)


if __name__ == "__main__":
    main()
