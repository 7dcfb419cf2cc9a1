"""A local stand-in for the OpticOdds API: seeded odds world, SSE streams, REST, faults."""
