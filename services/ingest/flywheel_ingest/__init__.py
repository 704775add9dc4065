"""Ingest service."""
