"""Colours where a person watches, plain text when piped."""

from __future__ import annotations

import sys

CODES = {"green": "32", "red": "31", "dim": "2", "bold": "1", "cyan": "36"}


def paint(text: str, colour: str) -> str:
    return f"\033[{CODES[colour]}m{text}\033[0m" if sys.stdout.isatty() else text
