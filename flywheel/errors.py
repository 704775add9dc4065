"""Typed errors: CodecErrors the dead-letter helper turns into DeadLetter events, and the ones retried instead."""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error Flywheel raises on purpose."""


class CodecError(FlywheelError):
    """A record could not be turned into an event; it belongs in the dead-letter topic."""


class UnknownSchemaId(CodecError):
    """The wire header names a schema no registry knows."""


class UndecodableRecord(CodecError):
    """The bytes are not a framed Avro record of the schema they claim."""


class InvalidEvent(CodecError):
    """A record was decoded, but its content breaks a rule of the consuming service."""


class UnknownEventType(FlywheelError):
    """An event name that has no schema in schemas/."""


class RegistryUnavailable(FlywheelError):
    """The schema registry could not answer (throttled, failing or denying access): retry the record later.

    Not a CodecError: the bytes may be fine, so the record is retried, never dead-lettered."""
