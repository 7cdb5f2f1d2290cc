"""A small HTTP/2 + gRPC server transport of our own (see server.py for why)."""

from .server import INLINE_METHODS, NativeServer

__all__ = ["INLINE_METHODS", "NativeServer"]
