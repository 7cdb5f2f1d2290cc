"""Seeded random Images API sequences, replayed on containerd and on ours.

The hand-written scenario covers the cases we thought of; this covers the
combinations we did not: random creates, updates with random masks, deletes
and filtered Lists over a small pool of names, labels and digests, so names
collide and filters hit. The first step whose normalised outcome differs is
reported with the seed and the operation. Budget: BOLTIMAGES_SLOW_BUDGET ops
per seed (default 150; CI-sized). Runs against each release (1.6.20, 1.7.24,
2.1.9); none differs on these operations (measured), so there is no per-release
expectation.
"""

from __future__ import annotations

import random
import uuid

import pytest

from tests.compat import scenario
from tests.compat.grpc_client import Client
from tests.helpers import slow_budget

pytestmark = pytest.mark.compat

NAMES = ["a:1", "a:2", "docker.io/library/b:latest", "example.com/c@" + scenario.D256, "d/e/f:g", "UPPER:1"]
DIGESTS = [scenario.D256, scenario.D256B, scenario.D256C, scenario.D384, scenario.D512, "sha256:bad", ""]
MEDIA = [scenario.MANIFEST, scenario.INDEX, scenario.DOCKER_MANIFEST, ""]
KEYS = ["env", "team", "a.b", "com.example/x", "k"]
VALUES = ["prod", "dev", "x y", "web,api", ""]
FILTERS = [
    "name=={name}", "name!={name}", "name~={frag}", "labels.{key}=={value}", "labels.{key}!={value}",
    "labels.{key}", 'labels."{key}"~="^{frag}"', "target.digest=={digest}", "target.mediatype~=json",
    "annotations.{key}", "name~={frag},labels.{key}", "name==", "labels.=={value}", 'name=="{name}"',
]
PATHS = ["labels", "target", "annotations", "labels.{key}", "annotations.{key}", "name", "bogus"]


def _pick_map(rng: random.Random) -> dict:
    return {rng.choice(KEYS): rng.choice(VALUES) for _ in range(rng.randint(0, 3))}


def _ops(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    ops = []
    for _ in range(count):
        kind = rng.choices(["create", "update", "delete", "get", "list"], [4, 4, 2, 1, 3])[0]
        image = dict(name=rng.choice(NAMES), digest=rng.choice(DIGESTS[:5] if rng.random() < .9 else DIGESTS),
                     media_type=rng.choice(MEDIA[:3] if rng.random() < .9 else MEDIA),
                     size=rng.choice([1, 10, 4096]) if rng.random() < .95 else 0,
                     labels=_pick_map(rng), annotations=_pick_map(rng))
        if kind in ("create",):
            ops.append({"op": kind, "image": image})
        elif kind == "update":
            paths = None if rng.random() < .2 else [
                rng.choice(PATHS).format(key=rng.choice(KEYS)) for _ in range(rng.randint(1, 3))]
            ops.append({"op": kind, "image": image, "paths": paths})
        elif kind in ("delete", "get"):
            ops.append({"op": kind, "name": rng.choice(NAMES)})
        else:
            filters = [rng.choice(FILTERS).format(name=rng.choice(NAMES), frag=rng.choice(["a", "b", "^d", "1$"]),
                                                  key=rng.choice(KEYS), value=rng.choice(VALUES[:4]) or "x",
                                                  digest=rng.choice(DIGESTS[:5]))
                       for _ in range(rng.randint(0, 2))]
            ops.append({"op": kind, "filters": filters})
    return ops


def _replay(client: Client, namespace: str, ops: list[dict]) -> list[dict]:
    run = scenario.Run(client, namespace)
    results = []
    for op in ops:
        if op["op"] == "create":
            outcome = run.create(**op["image"])
        elif op["op"] == "update":
            outcome = run.update(paths=op["paths"], **op["image"])
        elif op["op"] == "delete":
            outcome = run.delete(op["name"])
            if outcome.ok:
                run.forget(op["name"])
        elif op["op"] == "get":
            outcome = run.get(op["name"])
        else:
            outcome = run.list(*op["filters"])
        results.append(run.normalise(outcome))
    results.append(run.normalise(run.list()))
    return results


@pytest.mark.parametrize("seed", range(6))
def test_random_sequence(seed: int, real_client: Client, our_client: Client) -> None:
    ops = _ops(seed, slow_budget(150))
    namespace = f"random-{seed}-{uuid.uuid4().hex[:6]}"
    theirs = _replay(real_client, namespace, ops)
    ours = _replay(our_client, namespace, ops)
    for index, (a, b) in enumerate(zip(theirs, ours)):
        what = ops[index] if index < len(ops) else {"op": "final list"}
        assert b == a, f"seed {seed}, step {index}: {what}\ncontainerd: {a}\nboltimages: {b}"
