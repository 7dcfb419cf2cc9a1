"""Unit tests run without PostgreSQL and without processes: `scripts/test unit` in seconds."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def admin_url() -> str:
    """Every database fixture depends on this one: a unit test that asks for one fails."""
    raise pytest.UsageError("unit tests must not use PostgreSQL: move the test to integration/")
