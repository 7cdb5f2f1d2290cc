"""Concurrent clients: the outcome containerd guarantees must hold on ours too.

containerd serialises writes in bbolt transactions; ours batches them (group
commit). Either way: one winner for racing Creates of a name, no lost
labels.<key> updates, and every independent Create visible afterwards. Runs against
each release (1.6.20, 1.7.24, 2.1.9); none differs here (measured).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.compat import scenario
from tests.compat.grpc_client import Client

pytestmark = pytest.mark.compat

THREADS = 16


def _race(client: Client, namespace: str) -> dict:
    run = scenario.Run(client, namespace)
    with ThreadPoolExecutor(THREADS) as pool:
        same = list(pool.map(lambda i: run.create(name="race/same:1", labels={"who": str(i)}).code.name,
                             range(THREADS)))
        distinct = list(pool.map(lambda i: run.create(name=f"race/distinct:{i:02d}").code.name, range(THREADS)))
        labels = list(pool.map(lambda i: run.update(paths=[f"labels.k{i:02d}"], name="race/same:1",
                                                    labels={f"k{i:02d}": str(i)}).code.name, range(THREADS)))
        deletes = list(pool.map(lambda i: run.delete("race/distinct:00").code.name, range(THREADS)))
    final = run.get("race/same:1").response.image
    listed = [i.name for i in run.list().response.images]
    return {
        "same-name creates": sorted(same),
        "distinct creates": sorted(distinct),
        "label updates": sorted(labels),
        "racing deletes": sorted(deletes),
        "labels after": sorted(k for k in final.labels if k.startswith("k")),
        "one 'who' label": len([k for k in final.labels if k == "who"]),
        "listed": listed,
    }


def test_races_end_the_same(real_client: Client, our_client: Client) -> None:
    tag = uuid.uuid4().hex[:6]
    theirs = _race(real_client, f"race-{tag}")
    ours = _race(our_client, f"race-{tag}")
    assert theirs["same-name creates"].count("OK") == 1
    assert theirs["labels after"] == [f"k{i:02d}" for i in range(THREADS)]
    assert ours == theirs
