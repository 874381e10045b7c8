"""Helpers for testing overlay and third-party backends (fixtures in ``pytest_plugin``)."""
