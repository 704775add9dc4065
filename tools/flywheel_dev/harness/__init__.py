"""Builders and drivers of each service's events for tests, benchmarks and local experiments."""
