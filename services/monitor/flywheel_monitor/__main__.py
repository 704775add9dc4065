from flywheel.service import run_service
from flywheel_monitor.app import SERVICE, create_app
from flywheel_monitor.settings import MonitorSettings


def main() -> None:
    run_service(SERVICE, MonitorSettings, create_app)


if __name__ == "__main__":
    main()
