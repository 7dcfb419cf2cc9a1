"""Loopback servers for the tests and the benchmark: a race-free close for asyncio servers
(``listening``) and a TCP proxy that cuts, hangs and delays (``tcpproxy``). Not part of the
daemon's package: only ``tests/`` and ``bench/`` import it."""
