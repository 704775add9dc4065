"""Monitor service."""
