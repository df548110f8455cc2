"""``mitod``: start the daemon, in the background by default, or check a configuration.

This command uses argparse rather than click: the daemon process keeps every
module it imported for its whole life, and click would add about 3 MiB of
resident memory to it for nothing after start-up.
"""

import argparse
import os
import sys

from mitod import __version__
from mitod.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mitod",
        description="Autonomous monitoring and self-maintenance daemon for one Linux host. "
                    "Without options it starts in the background and returns once the daemon "
                    "is ready, or prints why it could not start.")
    parser.add_argument(
        "--config", dest="config_path", metavar="PATH",
        default=os.environ.get("MITOD_CONFIG", DEFAULT_CONFIG_PATH),
        help="configuration file to read (default: $MITOD_CONFIG or %(default)s)")
    parser.add_argument(
        "--foreground", action="store_true",
        help="run in this process without forking and log to stderr; for Type=notify "
             "units, containers and development")
    parser.add_argument(
        "--check-config", action="store_true",
        help='validate the configuration, print "configuration OK" or every error, and exit '
             "0 or 78")
    parser.add_argument("--version", action="version", version=f"mitod {__version__}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.check_config:
        sys.exit(_check(args.config_path))
    if args.foreground:
        sys.exit(_run_foreground(args.config_path))
    from mitod.daemon.daemonize import launch
    sys.exit(launch(args.config_path))


def _check(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        for line in error.errors:
            print(line, file=sys.stderr)
        print(f"{len(error.errors)} configuration error(s) in {config_path}", file=sys.stderr)
        return EX_CONFIG
    print(f"configuration OK: {config_path} ({len(config.files)} files, "
          f"{len(config.sites)} sites)")
    return 0


def _run_foreground(config_path: str) -> int:
    from mitod.daemon.runner import Daemon, StartupError

    daemon = Daemon(os.path.abspath(config_path), log_to_stderr=True)
    try:
        daemon.start()
    except StartupError as error:
        if not daemon.logs.configured:
            print(f"mitod: {error}", file=sys.stderr)
        return error.exit_code
    return daemon.serve()


if __name__ == "__main__":
    main()
