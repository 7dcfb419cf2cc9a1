"""The schema revision this build runs on, without importing alembic at start-up."""

from __future__ import annotations

# The newest migration in alembic/versions; a test keeps the two equal.
SCHEMA_HEAD = "0008"
