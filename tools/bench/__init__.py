"""Benchmarks of the service against bare WSGI baselines, and of Redis fsync policies."""
