"""Compatibility name: namespace validation lives in :mod:`.identifiers`."""

from .identifiers import namespace_required, validate_identifier, validate_namespace

__all__ = ["namespace_required", "validate_identifier", "validate_namespace"]
