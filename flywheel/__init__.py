"""Flywheel shared package: settings, codec, registry, topic catalogue, dead letters, logging, local stack, CLI."""

__version__ = "0.1.0"
