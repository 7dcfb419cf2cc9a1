from datetime import datetime
from typing import Any

from ingestor.domain.events import DecodedEvent, Kind

READS_SLOTS: bool
MAKES_EVENTS: bool

def fast_odds(
    group_key: str,
    stream: str,
    event_type: str,
    kind: Kind,
    data: bytes,
    event_id: str,
    received_at: datetime,
) -> DecodedEvent | None: ...
def rows(
    odds: list[Any], event: DecodedEvent, kind: Kind, stream: str, entry: tuple[int, int]
) -> bool: ...
def scanned(data: bytes, event_id: str = "1-0") -> bool: ...
