"""Build event records from `field=value` strings, typed by the schema (used by `flywheel produce`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flywheel.errors import InvalidEvent
from flywheel.events import to_millis


def _branches(ftype: Any) -> list[Any]:
    return ftype if isinstance(ftype, list) else [ftype]


def _type_name(branch: Any) -> str:
    return branch.get("type") if isinstance(branch, dict) else branch


def _coerce(path: str, ftype: Any, raw: str) -> Any:
    names = [_type_name(b) for b in _branches(ftype)]
    if raw == "null" and "null" in names:
        return None
    if any(isinstance(b, dict) and b.get("logicalType") == "timestamp-millis" for b in _branches(ftype)):
        return _timestamp(path, raw)
    if "string" in names or "enum" in names:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidEvent(f"field {path!r}: {raw!r} is not a valid {'/'.join(map(str, names))} value") from None


def _timestamp(path: str, raw: str) -> int:
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        return to_millis(datetime.fromisoformat(raw))
    except ValueError:
        raise InvalidEvent(f"field {path!r}: {raw!r} is neither epoch millis nor an ISO 8601 time") from None


def _record_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


def _record_branch(ftype: Any) -> dict[str, Any] | None:
    return next((b for b in _branches(ftype) if isinstance(b, dict) and b.get("type") == "record"), None)


def with_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """A record holding every field's default (nested records recursively where they have no default)."""
    out: dict[str, Any] = {}
    for name, field in _record_fields(schema).items():
        if "default" in field:
            out[name] = field["default"]
        elif (nested := _record_branch(field["type"])) is not None:
            out[name] = with_defaults(nested)
    return out


def apply_assignment(record: dict[str, Any], schema: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b=value` to `record`, coercing value to the field's Avro type."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise InvalidEvent(f"--set {assignment!r}: expected FIELD=VALUE")
    *parents, leaf = path.split(".")
    target, current = record, schema
    for part in parents:
        field = _record_fields(current).get(part)
        nested = _record_branch(field["type"]) if field else None
        if nested is None:
            raise InvalidEvent(f"field {path!r}: {part!r} is not a record field of {current['name']}")
        if target.get(part) is None:
            target[part] = {}
        target, current = target[part], nested
    field = _record_fields(current).get(leaf)
    if field is None:
        known = ", ".join(_record_fields(current))
        raise InvalidEvent(f"field {path!r}: {current['name']} has no field {leaf!r} (fields: {known})")
    target[leaf] = _coerce(path, field["type"], raw)


_PRIMITIVE_CHECKS: dict[str, Any] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int | datetime) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
}


def _describe(ftype: Any) -> str:
    if isinstance(ftype, list):
        return " or ".join(_describe(b) for b in ftype)
    if isinstance(ftype, dict):
        return ftype.get("logicalType") or ftype.get("name") or ftype["type"]
    return str(ftype)


def problems(value: Any, ftype: Any, path: str) -> list[str]:
    """Every place where `value` does not fit Avro type `ftype`, each naming its field path."""
    if isinstance(ftype, list):
        if any(not problems(value, branch, path) for branch in ftype):
            return []
        return [f"field {path!r}: {value!r} is not {_describe(ftype)}"]
    kind = _type_name(ftype)
    if kind in _PRIMITIVE_CHECKS:
        return [] if _PRIMITIVE_CHECKS[kind](value) else [f"field {path!r}: {value!r} is not {_describe(ftype)}"]
    if kind == "enum":
        ok = value in ftype["symbols"]
        return [] if ok else [f"field {path!r}: {value!r} is not one of {', '.join(ftype['symbols'])}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"field {path!r}: expected a list"]
        return [p for i, item in enumerate(value) for p in problems(item, ftype["items"], f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"field {path!r}: expected a map"]
        return [p for k, item in value.items() for p in problems(item, ftype["values"], f"{path}.{k}")]
    return _record_problems(value, ftype, path)


def _record_problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    prefix = f"{path}." if path else ""
    if not isinstance(value, dict):
        return [f"field {path!r}: expected a record {schema['name']}"]
    out = [f"field {prefix}{k!r}: not in {schema['name']}" for k in value if k not in _record_fields(schema)]
    for name, field in _record_fields(schema).items():
        if name not in value:
            if "default" not in field:
                out.append(f"field '{prefix}{name}': missing ({_describe(field['type'])} required)")
            continue
        out += problems(value[name], field["type"], f"{prefix}{name}")
    return out
