from flywheel.service import run_service
from flywheel_ingest.app import SERVICE, create_app
from flywheel_ingest.settings import IngestSettings


def main() -> None:
    run_service(SERVICE, IngestSettings, create_app)


if __name__ == "__main__":
    main()
