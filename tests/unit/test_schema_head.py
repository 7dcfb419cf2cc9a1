"""The daemon checks the schema against a constant, so that starting it needs no alembic."""

from __future__ import annotations

from ingestor.storage.migrations import head_revision
from ingestor.storage.schema import SCHEMA_HEAD


def test_the_constant_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_HEAD
