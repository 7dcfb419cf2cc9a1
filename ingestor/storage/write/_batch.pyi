from typing import Any

from ingestor.domain.events import DecodedEvent
from ingestor.storage.write.batch import FixtureStub

def collapse(
    events: list[DecodedEvent],
) -> tuple[list[tuple[Any, ...]], dict[str, FixtureStub]]: ...
