"""boltimages: containerd's image metadata service over a bbolt-compatible C engine.

Layers, each deciding only what is its own:
  boltimages.bolt    the storage engine (C core in native/, bound with cffi)
  boltimages.store   containerd's metadata layout on top of the engine
  boltimages.server  the gRPC services that translate requests into store calls
  boltimages.tools   offline commands for an operator holding a metadata.db
"""

__version__ = "0.1.0"
