from typing import Any

from ingestor.domain.events import DecodedEvent, Kind

def rows(
    odds: list[Any], event: DecodedEvent, kind: Kind, stream: str, entry: tuple[int, int]
) -> bool: ...
