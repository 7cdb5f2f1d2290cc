"""Choosing namespaces and images: by name, or with containerd's filter language.

The filter parser and matcher live in store/filters.py and the filter
adaptor in store/image_records.py, both shared with the Images/List server,
so a filter picks here exactly the images the server's List returns.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

from ..errors import InvalidArgument
from ..store import filters, image_records
from ..store.image_records import RawImage
from . import records
from .common import ToolError


def compile_filters(exprs: Sequence[str]) -> Optional[filters.AnyFilter]:
    """Parse filters once; several filters are OR-ed like containerd's List.

    A regular expression that does not compile is an error here, although
    containerd's List answers it with no image: from a command line, an empty
    answer would read as "no such image"."""
    if not exprs:
        return None
    try:
        return filters.parse_all(list(exprs), strict_regex=True)
    except InvalidArgument as exc:
        # containerd's text carries its error kind, twice for a syntax error
        # (": invalid argument: invalid argument"): the tool says it once
        detail = exc.detail
        while detail.endswith(_KIND):
            detail = detail[:-len(_KIND)]
        raise ToolError(f"bad filter: {detail}") from None


_KIND = ": invalid argument"


def pick_namespaces(tx: Any, namespace: Optional[str]) -> list[str]:
    if namespace is None:
        return records.namespaces(tx)
    return [namespace]


def select_images(tx: Any, namespaces: Iterable[str], names: Sequence[str],
                  compiled: Optional[filters.AnyFilter]) -> Iterator[tuple[str, RawImage]]:
    """(namespace, record) of every image named (all when no name is given)
    that the filters match, namespace by namespace, in name order."""
    wanted = {records.raw(name) for name in names}
    for ns in namespaces:
        found = records.iter_images(tx, ns)
        if wanted:
            found = [record for record in found if record.name in wanted]
        if compiled is not None:
            found = image_records.select(found, compiled)
        for record in found:
            yield ns, record
