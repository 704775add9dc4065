"""`flywheel stack|up|demo`: the commands that start the local platform.

They are tooling, not runtime: the core CLI (flywheel/cli.py) finds them through the "flywheel.commands"
entry point group (tools/pyproject.toml), so a service image, which does not install flywheel-dev, has
the operator commands only.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

from flywheel.clistyle import paint
from flywheel.settings import FlywheelSettings

DEFAULT_KAFKA_PORT = 19092
DEFAULT_MOTO_PORT = 15000


def _wait_for_interrupt() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _print_endpoints(stack: Any, extra: dict[str, str] | None = None) -> None:
    print(paint("Flywheel local stack is up", "green"))
    print(f"  kafka      {stack.kafka_bootstrap}")
    print(f"  aws (moto) {stack.aws_endpoint}  buckets: {stack.resources.data_bucket}, "
          f"{stack.resources.artifact_bucket}")
    for name, url in (extra or {}).items():
        print(f"  {name:<10} {url}  ({url}/metrics)")
    print(paint("  export these to point the CLI at it:", "dim"))
    for key in ("FLYWHEEL_KAFKA_BOOTSTRAP", "AWS_ENDPOINT_URL"):
        print(f"    export {key}={stack.env()[key]}")
    print(paint("Ctrl-C stops everything.", "dim"), flush=True)


def _stack(args: argparse.Namespace) -> Any:
    from flywheel_dev.localstack import LocalStack

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalStack(kafka_port=args.kafka_port, moto_port=args.moto_port,
                      external_kafka=args.external_kafka, log_dir=workdir)


def cmd_stack(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    with _stack(args) as stack:
        _print_endpoints(stack)
        _wait_for_interrupt()
    return 0


def cmd_up(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    from flywheel_dev.platform import Platform

    print(paint("starting the local stack and the three services...", "dim"), flush=True)
    with _stack(args) as stack, Platform(stack, Path(args.workdir), base_web_port=args.web_port) as platform:
        _print_endpoints(stack, {name: p.url for name, p in platform.procs.items()})
        if not args.exit_when_healthy:
            _wait_for_interrupt()
    return 0


def cmd_demo(args: argparse.Namespace, settings: FlywheelSettings) -> int:
    from flywheel_dev import demo

    return demo.run(args)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka-port", type=int, default=DEFAULT_KAFKA_PORT)
    parser.add_argument("--moto-port", type=int, default=DEFAULT_MOTO_PORT)
    parser.add_argument("--external-kafka", metavar="HOST:PORT", default=None,
                        help="use this Kafka instead of starting Tansu")
    parser.add_argument("--workdir", default=".flywheel", help="logs and state (default .flywheel)")


def add_stack(sub: Any) -> None:
    stack = sub.add_parser("stack", help="start the local stack (Tansu + moto) until Ctrl-C")
    _add_stack_options(stack)
    stack.set_defaults(func=cmd_stack)


def add_up(sub: Any) -> None:
    up = sub.add_parser("up", help="start the local stack and the four services until Ctrl-C")
    _add_stack_options(up)
    up.add_argument("--web-port", type=int, default=6066, help="first service web port (default 6066)")
    up.add_argument("--exit-when-healthy", action="store_true", help="stop once everything answers")
    up.set_defaults(func=cmd_up)


def add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the whole loop on the local stack, with a timeline (make run)")
    demo.add_argument("--examples", type=int, default=400, help="labelled examples in the base dataset version")
    demo.add_argument("--train-timeout", type=float, default=420.0, help="seconds to wait for each fine-tune")
    demo.add_argument("--keep-running", action="store_true", help="leave the platform up afterwards")
    demo.add_argument("--workdir", default=".flywheel/demo", help="logs and state")
    demo.add_argument("--env", action="append", type=_env_pair, metavar="KEY=VALUE",
                      help="extra environment for the services")
    demo.set_defaults(func=cmd_demo)
