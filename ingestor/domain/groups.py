"""Connection groups: each configured stream's leagues, split at ``leagues_per_connection``."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.config import ConfigError, StreamConfig


@dataclass(frozen=True, slots=True)
class Group:
    """One SSE connection: a stream's filters and a slice of its leagues."""

    key: str
    stream: StreamConfig
    leagues: tuple[str, ...]

    @property
    def path(self) -> str:
        """URL path below the API base."""
        if self.stream.kind == "copilot":
            return f"/stream/copilot/{self.stream.sport}/odds"
        return f"/stream/odds/{self.stream.sport}"

    def params(self, last_entry_id: str | None) -> list[tuple[str, str]]:
        """Query parameters; lists are repeated keys, as the vendor requires."""
        s = self.stream
        out: list[tuple[str, str]] = [("league", league) for league in self.leagues]
        out += [("sportsbook", b) for b in s.sportsbooks or ()]
        out += [("market", m) for m in s.markets or ()]
        out += [("fixture_id", f) for f in s.fixture_ids or ()]
        for name, flag in (("is_main", s.is_main), ("is_live", s.is_live)):
            if flag is not None:
                out.append((name, "true" if flag else "false"))
        if s.include_fixture_updates:
            out.append(("include_fixture_updates", "true"))
        if s.odds_format:
            out.append(("odds_format", s.odds_format))
        if last_entry_id:
            out.append(("last_entry_id", last_entry_id))
        return out


def group_key(stream: StreamConfig, leagues: tuple[str, ...]) -> str:
    """Stable, readable key: the same streams and leagues give the same cursor row."""
    books = f"[{'+'.join(stream.sportsbooks)}]" if stream.sportsbooks else ""
    return f"{stream.kind}:{stream.sport}{books}:{'+'.join(sorted(leagues))}"


def make_groups(streams: list[StreamConfig], leagues_per_connection: int) -> list[Group]:
    """Split every stream's leagues into connection groups, in configuration order."""
    groups: list[Group] = []
    seen: set[str] = set()
    for stream in streams:
        for i in range(0, len(stream.leagues), leagues_per_connection):
            leagues = tuple(stream.leagues[i : i + leagues_per_connection])
            key = group_key(stream, leagues)
            if key in seen:
                raise ConfigError(f"streams: two streams produce the same connection group {key}")
            seen.add(key)
            groups.append(Group(key, stream, leagues))
    return groups
