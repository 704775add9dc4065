"""Load the Avro contracts in schemas/ (one named type per file) and the released versions kept beside them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from fastavro.schema import expand_schema, load_schema, parse_schema, to_parsing_canonical_form

from flywheel.errors import UnknownEventType

NAMESPACE = "flywheel"
RELEASED_DIR = "released"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event schema: its full name, expanded JSON and parsed form."""

    name: str
    expanded: dict[str, Any]

    @cached_property
    def parsed(self) -> dict[str, Any]:
        return parse_schema(self.expanded)

    @cached_property
    def canonical(self) -> str:
        return to_parsing_canonical_form(self.expanded)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _is_event(schema: dict[str, Any]) -> bool:
    """Events are the records that carry the shared envelope."""
    return schema.get("type") == "record" and any(f["name"] == "envelope" for f in schema["fields"])


def _expand(path: Path) -> dict[str, Any]:
    return expand_schema(load_schema(path, _write_hint=False))


class SchemaSet:
    """Every named type of a schema directory; the events among them are what topics carry."""

    def __init__(self, schema_dir: Path) -> None:
        self.schema_dir = Path(schema_dir)
        if not self.schema_dir.is_dir():
            raise FileNotFoundError(f"schema directory {self.schema_dir} does not exist")
        self.types: dict[str, dict[str, Any]] = {
            p.stem: json.loads(p.read_text()) for p in sorted(self.schema_dir.glob("*.avsc"))
        }
        self.events: dict[str, SchemaVersion] = {
            name: SchemaVersion(name, _expand(self.schema_dir / f"{name}.avsc"))
            for name, raw in self.types.items()
            if _is_event(raw)
        }

    def event(self, name: str) -> SchemaVersion:
        """Current schema of an event, by full ('flywheel.X') or short ('X') name."""
        full = name if "." in name else f"{NAMESPACE}.{name}"
        try:
            return self.events[full]
        except KeyError:
            known = ", ".join(sorted(s.short_name for s in self.events.values()))
            raise UnknownEventType(f"no event schema named {name!r}; known: {known}") from None

    def released(self) -> list[SchemaVersion]:
        """Released versions kept in schemas/released/<Name>.v<N>.avsc (self-contained JSON)."""
        out = []
        for path in sorted((self.schema_dir / RELEASED_DIR).glob("*.avsc")):
            schema = json.loads(path.read_text())
            name = schema["name"] if "." in schema["name"] else f"{schema['namespace']}.{schema['name']}"
            out.append(SchemaVersion(name, schema))
        return out
