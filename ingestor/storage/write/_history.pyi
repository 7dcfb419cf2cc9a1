from collections.abc import Mapping
from typing import Any

from ingestor.domain.events import DecodedEvent, OddRow
from ingestor.storage.write.history import HistoryBatch
from ingestor.storage.write.state import HistoryContext

def records(
    odds: list[OddRow],
    event: int,
    settlements: Mapping[str, int],
    staged: tuple[int, str | None, int] | None,
    rows: list[Any],
    unsettled: list[tuple[list[Any], str]],
) -> None: ...
def encode_into(
    ctx: HistoryContext, events: list[DecodedEvent], check_all: bool, out: HistoryBatch
) -> None: ...
def changes_payload(h: HistoryBatch, codes: str) -> bytes: ...
