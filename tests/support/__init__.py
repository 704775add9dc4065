"""Test support shared across tiers (importable as `support`: pytest has pythonpath=["tests"])."""
