"""Offline tools for containerd's metadata file: one module per ``boltimages`` command.

  listing     ls, inspect          what the file holds (table or JSON), containerd filters
  check       check                engine structural check + containerd record layout
  compact     compact              rewrite without free pages, verify, optional atomic swap
  porting     export, import       JSON Lines, exact round trip, --on-conflict, --dry-run
  copying     copy                 images + content blob records (GC labels) across namespaces/files
  edit        tag, rm, label       like their ``ctr images`` counterparts
  salvage     salvage              tolerant raw page reader (rawpages) -> new valid file + loss report

Shared: common (safe open, one-line failures, backups, exit codes), progress (the
bar), scratch (files named only when complete),
records (image/blob records and JSON times), selection (names and filters),
content_walk (blobs reachable from a target), treewalk (logical comparison).
"""
