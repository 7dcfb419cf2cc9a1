from collections.abc import Mapping
from typing import Any

from ingestor.domain.events import OddRow

def records(
    odds: list[OddRow],
    event: int,
    settlements: Mapping[str, int],
    staged: tuple[int, str | None, int] | None,
    rows: list[Any],
    unsettled: list[tuple[list[Any], str]],
) -> None: ...
