"""``ingestor`` command line: migrate, run, check-config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ingestor import logs
from ingestor.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from ingestor.simulator.run import add_arguments as add_simulator_arguments
from ingestor.storage.db import DatabaseUnavailable
from ingestor.storage.migrations import SchemaError

EXIT_USAGE = 2
VENDOR_URL = str(Settings.model_fields["api_base_url"].default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingestor",
        description="Keep PostgreSQL in step with the OpticOdds v3 odds streams.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"TOML config file (default: $INGESTOR_CONFIG or {DEFAULT_CONFIG_PATH})"
    for name, text in (
        ("run", "stream into PostgreSQL until SIGTERM or SIGINT"),
        ("migrate", "bring the database schema to the newest revision (alembic upgrade head)"),
        ("check-config", "validate the configuration file and exit, without connecting"),
        ("partitions", "create the history's day partitions ahead and drop expired ones, once"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, default=None, help=config_help)
    text = "serve a local stand-in for the OpticOdds API (streams and REST) for demos and tests"
    sim = sub.add_parser("simulate", help=text, description=text)
    add_simulator_arguments(sim)
    return parser


def _database_url(config: Path | None) -> str:
    """Migrations need only the database URL: env first, then the file when it exists."""
    url = os.environ.get("INGESTOR_DATABASE_URL")
    if url:
        return url
    path = config or Path(os.environ.get("INGESTOR_CONFIG", DEFAULT_CONFIG_PATH))
    if path.exists():
        return load_settings(path).database_url.get_secret_value()
    return str(Settings.model_fields["database_url"].default.get_secret_value())


async def _partitions_once(settings: Settings) -> int:
    from ingestor.cli.app import maintain_partitions

    done = await maintain_partitions(settings)
    print(f"created {len(done['created'])}, dropped {len(done['dropped'])}", file=sys.stderr)
    return 0


def _run(settings: Settings) -> int:
    from ingestor.cli.app import run_daemon  # imported late: check-config needs none of it

    return asyncio.run(run_daemon(settings))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ingestor`` script and ``python -m ingestor``."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        from ingestor.simulator.run import main as simulate

        logs.configure("auto", "info")
        return simulate(args)
    try:
        if args.command == "migrate":
            from ingestor.storage.migrations import upgrade

            upgrade(_database_url(args.config))
            print("schema is at the newest revision", file=sys.stderr)
            return 0
        settings = load_settings(args.config)
        if args.command == "partitions":
            return asyncio.run(_partitions_once(settings))
        if args.command == "check-config":
            print(f"configuration OK: {len(settings.streams)} stream(s)", file=sys.stderr)
            return 0
        if settings.api_key is None and not settings.demo and settings.api_base_url == VENDOR_URL:
            raise ConfigError(
                "OPTICODDS_API_KEY (or OPTICODDS_API_KEY_FILE) is not set: the vendor's API "
                "needs a key; set demo_api_base_url to read a simulator instead"
            )
        logs.configure(settings.log_format, settings.log_level)
        return _run(settings)
    except ConfigError as exc:
        print(f"ingestor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SchemaError, DatabaseUnavailable) as exc:
        print(f"ingestor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
