"""Benchmarks: the project's load against the raw HTTP floor and dlt, on the sandbox API.

Run on purpose (``python -m benchmarks.run --help``), never part of the test suite.
"""
