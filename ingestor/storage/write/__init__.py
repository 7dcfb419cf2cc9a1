"""The write path in one room: the writer (its face: ``ports.WritePath``), its state, batch
building, the history encoder with its packed keys, and the statements of a flush."""

from ingestor.storage.write.pgcopy import COMPILED
from ingestor.storage.write.writer import Writer

__all__ = ["COMPILED", "Writer"]
