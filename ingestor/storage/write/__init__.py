"""The write path in one room: the writer (its face: ``ports.WritePath``), its state, batch
building, the history encoder with its packed keys, and the statements of a flush."""

from ingestor.storage.write import batch, history, pgcopy
from ingestor.storage.write.writer import Writer

# Whether every compiled twin of the write path was built (setup.py) and is what runs.
COMPILED = batch.COMPILED and history.COMPILED and pgcopy.COMPILED

__all__ = ["COMPILED", "Writer"]
