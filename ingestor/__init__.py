"""OpticOdds v3 odds streams into PostgreSQL."""

__version__ = "0.1.0"
