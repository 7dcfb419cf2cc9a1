"""Errors that stop the daemon before it streams: each is one line for the operator, exit 1."""

from __future__ import annotations


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


class DatabaseUnavailable(StartupError):
    """PostgreSQL did not answer within the start-up bound, or refused us for good."""


class SchemaError(StartupError):
    """The database schema is missing or older than this build expects."""


class PermissionProblem(StartupError):
    """The daemon's database role lacks a privilege it needs."""


class PortUnavailable(StartupError):
    """The metrics (or simulator) port cannot be opened."""
