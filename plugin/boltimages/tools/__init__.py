"""Offline tools for containerd's metadata file: one module per ``boltimages`` command."""
