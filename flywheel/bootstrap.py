"""The one place that builds adapters from settings; nothing connects to a broker or AWS at import time."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from flywheel.codec import AvroCodec
from flywheel.registry import EmbeddedRegistry, GlueRegistry, SchemaRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import FlywheelSettings, RegistryKind

_RETRIES = Config(retries={"max_attempts": 10, "mode": "adaptive"})


def aws_client(settings: FlywheelSettings, service: str, **kwargs: Any) -> Any:
    """A boto3 client; credentials come only from the standard AWS chain (IRSA on EKS)."""
    return boto3.client(service, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url,
                        config=_RETRIES, **kwargs)


def build_registry(settings: FlywheelSettings) -> SchemaRegistry:
    schemas = SchemaSet(settings.schema_dir)
    if settings.registry is RegistryKind.GLUE:
        return GlueRegistry(schemas, aws_client(settings, "glue"), settings.glue_registry_name)
    return EmbeddedRegistry(schemas)


def build_codec(settings: FlywheelSettings) -> AvroCodec:
    return AvroCodec(build_registry(settings))
