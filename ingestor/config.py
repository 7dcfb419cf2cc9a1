"""Settings: one TOML file plus environment overrides (prefix ``INGESTOR_``)."""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_PATH = Path("config/ingestor.toml")
MAX_SPORTSBOOKS = 5

NonEmptyStr = Annotated[str, Field(min_length=1)]


class ConfigError(Exception):
    """Invalid configuration; the message names the offending key."""


class StreamConfig(BaseModel):
    """One configured feed: a sport on the copilot or regular odds stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["copilot", "odds"]
    sport: NonEmptyStr
    leagues: list[NonEmptyStr] = Field(min_length=1)
    markets: list[NonEmptyStr] | None = None
    sportsbooks: list[NonEmptyStr] | None = None
    fixture_ids: list[NonEmptyStr] | None = None
    is_main: bool | None = None
    is_live: bool | None = None
    include_fixture_updates: bool = True
    odds_format: NonEmptyStr | None = None

    @field_validator("leagues")
    @classmethod
    def _unique_leagues(cls, leagues: list[str]) -> list[str]:
        # A league listed twice would open a second connection carrying the same odds.
        if len(set(leagues)) != len(leagues):
            raise ValueError("leagues must not repeat")
        return leagues

    @model_validator(mode="after")
    def _sportsbooks_match_kind(self) -> StreamConfig:
        if self.kind == "copilot" and self.sportsbooks is not None:
            raise ValueError("sportsbooks is only accepted on kind = 'odds' streams")
        if self.kind == "odds":
            if not self.sportsbooks:
                raise ValueError("kind = 'odds' needs sportsbooks (1 to 5)")
            if len(self.sportsbooks) > MAX_SPORTSBOOKS:
                raise ValueError(
                    f"sportsbooks has {len(self.sportsbooks)} entries; the vendor accepts "
                    f"at most {MAX_SPORTSBOOKS}"
                )
        return self


class _Component(BaseModel):
    """One component's knobs: its fields, defaults and bounds are declared once, here."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DatabaseSettings(_Component):
    """Where the daemon writes, and how start-up treats the database."""

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    database_wait_s: float = Field(default=60.0, ge=0)
    migrate_on_start: bool = False

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: SecretStr) -> SecretStr:
        return _postgres_url(url)


class FeedSettings(_Component):
    """The vendor's API (or the simulator standing in for it) and its key."""

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPTICODDS_API_KEY", "INGESTOR_API_KEY")
    )
    api_base_url: str = "https://api.opticodds.com/api/v3"
    # Used instead of api_base_url when no API key is set (the compose stack's simulator).
    demo_api_base_url: str | None = None
    # True: read demo_api_base_url even when a key is set (an explicit switch for the demo).
    demo: bool = False

    @field_validator("api_base_url", "demo_api_base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, key: object) -> object:
        # Compose passes OPTICODDS_API_KEY= through as an empty string: that means "no key".
        if isinstance(key, str) and not key.strip():
            return None
        return key

    @model_validator(mode="after")
    def _demo_needs_its_url(self) -> Self:
        if self.demo and self.demo_api_base_url is None:
            raise ValueError("demo = true needs demo_api_base_url (the simulator's API root)")
        return self

    @property
    def in_demo(self) -> bool:
        """Reading the simulator: asked for, or no key and a demo URL. Said loudly."""
        return self.demo_api_base_url is not None and (self.demo or self.api_key is None)

    @property
    def effective_api_base_url(self) -> str:
        """Where the streams and REST calls go."""
        if self.in_demo and self.demo_api_base_url:
            return self.demo_api_base_url
        return self.api_base_url

    @property
    def key(self) -> str | None:
        """The API key in clear, for the one header that carries it."""
        return self.api_key.get_secret_value() if self.api_key else None


class StreamSettings(FeedSettings):
    """One SSE worker's knobs (the feed's address and key included)."""

    leagues_per_connection: int = Field(default=10, ge=1, le=100)
    max_event_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    dead_letter_max_bytes: int = Field(default=65536, ge=0, le=16 * 1024 * 1024)
    reconnect_initial_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    stall_timeout_s: float = Field(default=15.0, gt=0)
    no_data_warning_s: float = Field(default=120.0, gt=0)
    auth_retry_max_s: float = Field(default=300.0, gt=0)
    stream_connects_per_15s: int = Field(default=200, ge=1, le=250)


class RestSettings(FeedSettings):
    """Gap recovery and every other REST call of the process (the feed's address and key
    included)."""

    rehydrate: bool = True
    rehydrate_window_h: float = Field(default=48.0, gt=0)
    # A snapshot that failed (REST down) is taken again after this, doubling up to 20 times it.
    rehydrate_retry_s: float = Field(default=30.0, gt=0)
    rest_requests_per_15s: int = Field(default=2000, ge=1, le=2500)
    # The vendor's separate budget of its historical odds endpoint (gap repair): 10 per 15 s.
    historical_requests_per_15s: int = Field(default=10, ge=1, le=10)
    rest_timeout_s: float = Field(default=30.0, gt=0)


class WriterSettings(_Component):
    """The queue between the workers and the writer, and the writer's flushes."""

    writer_connections: int = Field(default=2, ge=1, le=16)
    writer_batch_max_rows: int = Field(default=20_000, ge=1, le=1_000_000)
    queue_max_events: int = Field(default=4000, ge=1, le=1_000_000)
    flush_timeout_s: float = Field(default=60.0, gt=0)
    flush_retry_max_s: float = Field(default=30.0, gt=0)


class CoordinationSettings(_Component):
    """How processes share the groups."""

    coordination: Literal["none", "postgres"] = "none"
    lease_check_s: float = Field(default=5.0, gt=0)


class PartitionSettings(_Component):
    """The history's day partitions."""

    manage_partitions: bool = True
    history_retention_days: int = Field(default=30, ge=1)
    partitions_ahead_days: int = Field(default=7, ge=1, le=366)
    partition_check_s: float = Field(default=3600.0, gt=0)
    # DDL needs the tables' owner: the writer may run as a role that only reads and writes.
    maintenance_database_url: SecretStr | None = None

    @field_validator("maintenance_database_url")
    @classmethod
    def _maintenance_url(cls, url: SecretStr | None) -> SecretStr | None:
        return None if url is None else _postgres_url(url)


class ServiceSettings(_Component):
    """What an operator sees and how the process starts and stops."""

    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    progress_log_s: float = Field(default=60.0, gt=0)
    ready_max_failures: int = Field(default=10, ge=1)
    # /readyz fails while a group this process streams has been without a connection this
    # long (a reconnect takes at most reconnect_max_s, 60 s, plus connect_timeout_s).
    ready_connect_s: float = Field(default=90.0, gt=0)
    ready_commit_wait_s: float = Field(default=30.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    worker_restart_max_s: float = Field(default=30.0, gt=0)


def _postgres_url(url: SecretStr) -> SecretStr:
    if not url.get_secret_value().startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql://")
    return url


class Settings(
    DatabaseSettings,
    StreamSettings,
    RestSettings,
    WriterSettings,
    CoordinationSettings,
    PartitionSettings,
    ServiceSettings,
    BaseSettings,
):
    """Every knob of the daemon: the components' settings side by side, one flat file (and
    ``INGESTOR_<KEY>`` variables, which win). Each component is handed ``Settings`` whole, as
    the component type it declares: nothing copies a value or a default."""

    model_config = SettingsConfigDict(
        env_prefix="INGESTOR_", extra="forbid", populate_by_name=True, frozen=True
    )

    streams: list[StreamConfig] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML file (passed as init arguments)."""
        return (env_settings, init_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): TOML files are UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


# INGESTOR_ variables that are not settings: where the config file and the migrations are, and
# the compose roles' names (.env.example sets them for the postgres container).
OTHER_VARIABLES = frozenset(
    {"INGESTOR_CONFIG", "INGESTOR_ALEMBIC_DIR", "INGESTOR_DB_USER", "INGESTOR_DB_PASSWORD"}
)


def _unknown_variables() -> list[str]:
    """``INGESTOR_*`` variables that name no setting: refused like an unknown TOML key (a
    misspelled one would otherwise be silently ignored)."""
    known = {f"INGESTOR_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    lines = []
    for name in sorted(v for v in os.environ if v.startswith("INGESTOR_") and v not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"  {name}: unknown environment variable, no such setting{hint}")
    return lines


def _key_name(loc: tuple[int | str, ...]) -> str:
    """``streams[0].leagues``; a top-level key set in the environment names its variable."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    if len(loc) == 1 and isinstance(loc[0], str):
        env = "OPTICODDS_API_KEY" if loc[0] == "api_key" else f"INGESTOR_{loc[0].upper()}"
        if env in os.environ:
            name += f" (from {env})"
    return name or "(top level)"


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"invalid configuration in {path}:"]
    for err in exc.errors(include_url=False, include_input=False):
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {_key_name(err['loc'])}: {msg.removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_settings(path: Path | None = None) -> Settings:
    """Read the TOML file (``INGESTOR_CONFIG`` or the default path) and apply env overrides."""
    path = path or Path(os.environ.get("INGESTOR_CONFIG", DEFAULT_CONFIG_PATH))
    unknown = _unknown_variables()
    if unknown:
        raise ConfigError("\n".join(["invalid configuration in the environment:", *unknown]))
    data = _read_toml(path)
    _read_api_key_file(data)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _read_api_key_file(data: dict[str, Any]) -> None:
    """Support ``OPTICODDS_API_KEY_FILE`` (Docker and Kubernetes secrets)."""
    key_file = os.environ.get("OPTICODDS_API_KEY_FILE")
    if not key_file or os.environ.get("OPTICODDS_API_KEY"):
        return
    try:
        data["api_key"] = Path(key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"OPTICODDS_API_KEY_FILE={key_file} cannot be read: {exc.strerror}"
        ) from None
