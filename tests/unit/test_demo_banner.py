"""The demo prints its database URL: never with a password in it."""

from __future__ import annotations

import pytest

from ingestor.cli.demo import masked


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/odds_demo",
            "postgresql://postgres@127.0.0.1:5432/odds_demo",
        ),
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h:5432/db?password=s3cret&sslmode=require",
            "postgresql://u@h:5432/db?password=***&sslmode=require",
        ),
        ("postgresql://u:s3cret@h1:5432,h2:5432/db", "postgresql://u:***@h1:5432,h2:5432/db"),
    ],
)
def test_the_banner_never_shows_a_password(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert "s3cret" not in masked(url)
