"""Flywheel developer tooling: never installed in a service image (see docs/deploy.md)."""
