"""``ingestor`` command line: run, migrate, check-config, partitions, simulate, demo.

Every failure an operator can meet is one line on stderr, never a traceback: exit code 2 for
a configuration problem, 1 for a runtime one (database, port, schema)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ingestor import logs
from ingestor.cli.demo import add_arguments as add_demo_arguments
from ingestor.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from ingestor.errors import StartupError
from ingestor.simulator.run import add_arguments as add_simulator_arguments

EXIT_RUNTIME = 1
EXIT_USAGE = 2
VENDOR_URL = str(Settings.model_fields["api_base_url"].default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingestor",
        description="Keep PostgreSQL in step with the OpticOdds v3 odds streams.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"TOML config file (default: $INGESTOR_CONFIG or {DEFAULT_CONFIG_PATH})"
    commands = {}
    for name, text in (
        ("run", "stream into PostgreSQL until SIGTERM or SIGINT"),
        ("migrate", "bring the database schema to the newest revision, or to --to REVISION"),
        ("check-config", "validate the configuration and list the connections it opens"),
        ("partitions", "create the history's day partitions ahead and drop expired ones, once"),
    ):
        cmd = commands[name] = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, default=None, help=config_help)
    commands["migrate"].add_argument(
        "--to",
        metavar="REVISION",
        default="head",
        help="target revision: 'head' (default), an older one to downgrade to, or 'base'",
    )
    text = "serve a local stand-in for the OpticOdds API (streams and REST) for demos and tests"
    sim = sub.add_parser("simulate", help=text, description=text)
    add_simulator_arguments(sim)
    text = (
        "the demo in one command, without containers: a database of its own, migrated, the "
        "simulator and the daemon reading it; Ctrl-C stops both"
    )
    add_demo_arguments(sub.add_parser("demo", help=text, description=text))
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opticodds-ingestor")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _database_url(config: Path | None) -> str:
    """Migrations need only the database URL: env first, then the file when it exists."""
    url = os.environ.get("INGESTOR_DATABASE_URL")
    if url:
        return url
    path = config or Path(os.environ.get("INGESTOR_CONFIG", DEFAULT_CONFIG_PATH))
    if path.exists():
        return load_settings(path).database_url.get_secret_value()
    return str(Settings.model_fields["database_url"].default.get_secret_value())


def _migrate(url: str, target: str) -> int:
    from ingestor.storage.migrations import migrate  # alembic is imported for this command only

    print(migrate(url, target), file=sys.stderr)
    return 0


def _partitions(settings: Settings) -> int:
    from ingestor.storage.partitions import partitions_command

    url = (settings.maintenance_database_url or settings.database_url).get_secret_value()
    print(partitions_command(url, settings), file=sys.stderr)
    return 0


def _check_config(settings: Settings) -> int:
    from ingestor.domain.groups import make_groups

    _require_key(settings)
    groups = make_groups(settings.streams, settings.leagues_per_connection)
    print(
        f"configuration OK: {len(settings.streams)} stream(s), {len(groups)} connection(s) "
        f"of at most {settings.leagues_per_connection} leagues, to "
        f"{settings.effective_api_base_url}{' (DEMO: the simulator)' if settings.in_demo else ''}",
        file=sys.stderr,
    )
    for g in groups:
        print(f"  {g.key}  ({len(g.leagues)} league(s))", file=sys.stderr)
    return 0


def _require_key(settings: Settings) -> None:
    """The vendor's API needs a key: what ``run`` would refuse, ``check-config`` refuses."""
    if settings.api_key is None and not settings.in_demo and settings.api_base_url == VENDOR_URL:
        raise ConfigError(
            "OPTICODDS_API_KEY (or OPTICODDS_API_KEY_FILE) is not set: the vendor's API "
            "needs a key; set demo_api_base_url to read a simulator instead"
        )


def _run(settings: Settings) -> int:
    _require_key(settings)
    logs.configure(settings.log_format, settings.log_level)
    from ingestor.cli.app import run_daemon  # imported late: check-config needs none of it

    return asyncio.run(run_daemon(settings))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ingestor`` script and ``python -m ingestor``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            from ingestor.simulator.run import main as simulate

            logs.configure("auto", "info")
            return simulate(args)
        if args.command == "demo":
            from ingestor.cli.demo import main as demo

            return demo(args)
        if args.command == "migrate":
            return _migrate(_database_url(args.config), args.to)
        settings = load_settings(args.config)
        if args.command == "partitions":
            return _partitions(settings)
        if args.command == "check-config":
            return _check_config(settings)
        return _run(settings)
    except ConfigError as exc:
        print(f"ingestor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        print(f"ingestor: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
