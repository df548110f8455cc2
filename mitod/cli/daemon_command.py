"""``mitod``: start the daemon, in the background by default, or check a configuration."""

import os
import sys

import click

from mitod import __version__
from mitod.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

EX_CONFIG = 78


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="MITOD_CONFIG", default=DEFAULT_CONFIG_PATH,
              show_default=True, metavar="PATH",
              help="Configuration file to read (also set by MITOD_CONFIG).")
@click.option("--foreground", is_flag=True,
              help="Run in this process without forking; log to stderr. For Type=notify "
                   "units, containers and development.")
@click.option("--check-config", is_flag=True,
              help='Validate the configuration, print "configuration OK" or every error, and '
                   "exit 0 or 78.")
@click.version_option(__version__, prog_name="mitod")
def command(config_path: str, foreground: bool, check_config: bool) -> None:
    """Autonomous monitoring and self-maintenance daemon for one Linux host."""
    if check_config:
        sys.exit(_check(config_path))
    if foreground:
        sys.exit(_run_foreground(config_path))
    from mitod.daemon.daemonize import launch
    sys.exit(launch(config_path))


def _check(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        for line in error.errors:
            click.echo(line, err=True)
        click.echo(f"{len(error.errors)} configuration error(s) in {config_path}", err=True)
        return EX_CONFIG
    click.echo(f"configuration OK: {config_path} ({len(config.files)} files, "
               f"{len(config.sites)} sites)")
    return 0


def _run_foreground(config_path: str) -> int:
    from mitod.daemon.runner import Daemon, StartupError

    daemon = Daemon(os.path.abspath(config_path), log_to_stderr=True)
    try:
        daemon.start()
    except StartupError as error:
        if daemon.logs.stream_handler is None:
            click.echo(f"mitod: {error}", err=True)
        return error.exit_code
    return daemon.serve()


def main() -> None:
    command()  # pylint: disable=no-value-for-parameter


if __name__ == "__main__":
    main()
