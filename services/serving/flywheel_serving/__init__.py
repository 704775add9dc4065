"""Serving service."""
