"""Helpers for the tests: walk files and worker processes."""
