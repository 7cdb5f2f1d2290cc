"""Differential suite: the same Images/Namespaces/Leases calls against real containerd and ours.

`scenario.STEPS` runs once per server (in order, in a namespace of its own),
against each containerd release (1.6.20, 1.7.24, 2.1.9); every step is then a
separate test case, so a failure names the release and the case and shows both
answers. `test_containerd_answer` pins what each release itself says (so the
scenario is known to exercise what it claims); `test_ours_matches` is the
compatibility proof. Where the releases answer differently (VERSIONED, all
measured), each release's answer is pinned and ours must answer as 2.x does.
Features only newer releases have (source_date_epoch, the Delete target
check) are asserted separately at the end, per release.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.compat import scenario
from tests.compat.conftest import SELFTEST
from tests.compat.grpc_client import Client
from tests.compat.releases import Release

pytestmark = pytest.mark.compat

NAMESPACE = "compat-diff"
STEP_IDS = [step.id for step in scenario.STEPS]
STEPS = {step.id: step for step in scenario.STEPS}


@pytest.fixture(scope="session")
def real_results(real_client: Client) -> dict:
    return scenario.run_scenario(real_client, NAMESPACE)


@pytest.fixture(scope="session")
def our_results(our_client: Client) -> dict:
    return scenario.run_scenario(our_client, NAMESPACE)


# Steps where we differ from containerd on purpose (README "Deliberate
# differences"): Namespaces/Delete refuses a namespace that still holds leases,
# where containerd deletes it and drops the leases silently. Our answer is
# pinned here instead (code, a piece of the message); containerd's own answer
# stays pinned by test_containerd_answer.
DELIBERATE = {
    "namespaces/lease-only-delete": ("FAILED_PRECONDITION", "must be empty, but it still has leases"),
    # the lease survived, so deleting it succeeds, and the namespace is then empty
    "namespaces/lease-only-lease-gone": ("OK", ""),
    "namespaces/lease-only-delete-again": ("OK", ""),
}


# Steps where the releases answer differently, measured against each one. `keys`: the
# parts of the normalised answer that differ (the rest must be equal between every
# release and ours); `answers`: those parts per release. Ours must give 2.x's answer
# (the target: most nodes run 1.7/2.x) unless `ours` pins a deliberate difference.
@dataclasses.dataclass
class Versioned:
    keys: tuple[str, ...]
    answers: dict[str, dict]          # "1.6"/"1.7"/"2.1" -> {key: value}
    ours: Optional[dict] = None       # our deliberate answer (parts), when we differ from every release


def _label_text(what: str, key: str, size: int) -> dict[str, dict]:
    old = (f"{what}.Labels: label key and value greater than maximum size (4096 bytes), "
           f"key: {key[:10]}: invalid argument")
    new = (f"{what}.Labels: label key and value length ({size} bytes) greater than maximum size (4096 bytes), "
           f"key: {key[:64]}: invalid argument")
    return {"1.6": {"details": old}, "1.7": {"details": new}, "2.1": {"details": new}}


def _ns_update_response() -> Versioned:
    return Versioned(("response",), {"1.6": {"response": {"namespace": {}}}, "1.7": {"response": {}},
                                     "2.1": {"response": {}}})


def _header_case(ns_suffix: str, newer_response: dict, bad_header: bool) -> Versioned:
    if bad_header:
        text = ('failed publishing event: namespace validation: identifier "bad ns" must match '
                '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument')
    else:
        text = "failed publishing event: namespace is required: failed precondition"
    newer = {"code": "OK", "details": "", "response": newer_response}
    return Versioned(("code", "details", "response"),
                     {"1.6": {"code": "UNKNOWN", "details": text, "response": None}, "1.7": newer, "2.1": newer})


VERSIONED: dict[str, Versioned] = {
    "create/label-4097": Versioned(("details",), _label_text("image", "k" * 2048, 4097)),
    "create/label-key-4097": Versioned(("details",), _label_text("image", "k" * 4097, 4097)),
    "update/mask-labels.key-value-too-big": Versioned(("details",), _label_text("image", "big", 4097)),
    "update/mask-labels-too-big": Versioned(("details",), _label_text("image", "k" * 4000, 4097)),
    "namespaces/create-label-too-big": Versioned(("details",), _label_text("namespace", "k" * 4097, 4097)),
    "namespaces/update-label-too-big": Versioned(("details",), _label_text("namespace", "k" * 4097, 4097)),
    "namespaces/update-no-mask": _ns_update_response(),
    "namespaces/update-mask-labels.d": _ns_update_response(),
    "namespaces/update-mask-labels.key": _ns_update_response(),
    "namespaces/update-mask-labels.key-absent": _ns_update_response(),
    "namespaces/update-missing-creates": _ns_update_response(),
    "namespaces/create-no-header": _header_case(
        "-nohdr", {"namespace": {"labels": {"a": "1"}, "name": NAMESPACE + "-nohdr"}}, bad_header=False),
    "namespaces/update-no-header": _header_case("-nohdr", {}, bad_header=False),
    "namespaces/create-invalid-header": _header_case(
        "-badhdr", {"namespace": {"name": NAMESPACE + "-badhdr"}}, bad_header=True),
    "namespaces/update-invalid-header": _header_case("-badhdr", {}, bad_header=True),
    "namespaces/update-invalid-name": Versioned(
        ("code", "details", "response"),
        {"1.6": {"code": "OK", "details": "", "response": {"namespace": {}}},
         **{minor: {"code": "UNKNOWN", "response": None,
                    "details": 'failed publishing event: namespace validation: identifier "Bad Name" must match '
                               '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument'}
            for minor in ("1.7", "2.1")}},
        # deliberate: we refuse inside the write, so nothing is stored; 2.x's code, without
        # its "failed publishing event" (nothing was published)
        ours={"code": "UNKNOWN", "response": None}),
}
TARGET = "2.1"


def _show(result: dict) -> str:
    return json.dumps(result, indent=1, sort_keys=True, default=str)[:4000]


def _parts(answer: dict, keys) -> dict:
    return {key: answer.get(key) for key in keys}


@pytest.mark.parametrize("step_id", STEP_IDS)
def test_containerd_answer(step_id: str, release: Release, real_results: dict) -> None:
    step = STEPS[step_id]
    got = real_results[step_id]
    assert got["code"] == step.expected(release.minor).name, (
        f"containerd {release.version} answered {step_id} with\n{_show(got)}")
    if step_id in VERSIONED:
        pinned = VERSIONED[step_id].answers[release.minor]
        assert _parts(got, pinned) == pinned, f"containerd {release.version}, {step_id}:\n{_show(got)}"


@pytest.mark.parametrize("step_id", STEP_IDS)
def test_ours_matches(step_id: str, release: Release, real_results: dict, our_results: dict) -> None:
    step = STEPS[step_id]
    theirs, ours = dict(real_results[step_id]), dict(our_results[step_id])
    if step_id in DELIBERATE and not SELFTEST:
        code, fragment = DELIBERATE[step_id]
        assert ours["code"] == code and fragment in ours.get("details", ""), (
            f"{step_id}: deliberate difference not kept\n--- boltimages:\n{_show(ours)}")
        return
    if not step.compare_details:
        theirs.pop("details"), ours.pop("details")
    versioned = VERSIONED.get(step_id)
    if versioned is not None and not SELFTEST:
        if versioned.ours is not None:
            assert _parts(ours, versioned.ours) == versioned.ours, f"{step_id}: ours\n{_show(ours)}"
            return
        target = versioned.answers[TARGET]
        assert _parts(ours, versioned.keys) == target, (
            f"{step_id}: ours must answer as containerd 2.x\n--- 2.x: {target}\n--- boltimages:\n{_show(ours)}")
        for key in versioned.keys:
            theirs.pop(key, None), ours.pop(key, None)
    assert ours == theirs, (f"{step_id}: servers differ\n--- containerd {release.version}:\n{_show(theirs)}\n"
                            f"--- boltimages:\n{_show(ours)}")


# ---------------------------------------------------------------------------
# Features newer releases have. Measured: 1.7.24 already honours source_date_epoch;
# only 2.x checks Delete's target. Where a release has the feature, the same checks
# run against it and against ours; where it lacks it, we assert it ignores the field.

EPOCH = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_000_000)
HONOURS_SOURCE_DATE_EPOCH = {"1.6": False, "1.7": True, "2.1": True}
CHECKS_DELETE_TARGET = {"1.6": False, "1.7": False, "2.1": True}


def _require_field(message_cls, field: str) -> None:
    if field not in message_cls.DESCRIPTOR.fields_by_name:
        pytest.fail(f"our proto {message_cls.DESCRIPTOR.full_name} lacks 2.x field {field!r}", pytrace=False)


def _ns_run(client: Client, namespace: str) -> scenario.Run:
    return scenario.Run(client, namespace)


def _check_source_date_epoch(client: Client) -> None:
    """2.x semantics: source_date_epoch sets created/updated on Create and updated on Update."""
    pb = client.images_pb2
    _require_field(pb.CreateImageRequest, "source_date_epoch")
    _require_field(pb.UpdateImageRequest, "source_date_epoch")
    run = _ns_run(client, "compat-epoch")
    request = pb.CreateImageRequest(image=run.image("epoch:1"), source_date_epoch=EPOCH)
    created = client.call(client.images.Create, request, run.ns)
    assert created.ok, str(created)
    assert created.response.image.created_at == EPOCH
    assert created.response.image.updated_at == EPOCH
    later = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    update = pb.UpdateImageRequest(image=run.image("epoch:1", labels={"a": "b"}), source_date_epoch=later)
    update.update_mask.paths.append("labels")
    updated = client.call(client.images.Update, update, run.ns)
    assert updated.ok, str(updated)
    assert updated.response.image.created_at == EPOCH
    assert updated.response.image.updated_at == later
    fetched = run.get("epoch:1")
    assert fetched.ok and fetched.response.image.created_at == EPOCH and fetched.response.image.updated_at == later
    # Without the field the clock is used again: updated moves on, created stays.
    plain = client.call(client.images.Update, pb.UpdateImageRequest(image=run.image("epoch:1")), run.ns)
    assert plain.ok and plain.response.image.created_at == EPOCH
    assert plain.response.image.updated_at != later


def test_source_date_epoch_ours(our_client: Client) -> None:
    if SELFTEST:
        pytest.skip("self-test mode: the 'ours' side is containerd 1.6, which lacks this feature")
    _check_source_date_epoch(our_client)


def test_source_date_epoch_containerd(release: Release, real_client: Client) -> None:
    if HONOURS_SOURCE_DATE_EPOCH[release.minor]:
        _check_source_date_epoch(real_client)
        return
    # 1.6's proto has no field 3 on CreateImageRequest: sent anyway, it is an unknown field and ignored.
    run = _ns_run(real_client, "compat-epoch")
    image = run.image("epoch:1")
    raw = real_client.images_pb2.CreateImageRequest(image=image).SerializeToString()
    raw += _tag(_field_number("CreateImageRequest", "source_date_epoch", 2), 2) + \
        _len_delimited(EPOCH.SerializeToString())
    call = real_client.channel.unary_unary("/containerd.services.images.v1.Images/Create",
                                           request_serializer=None,
                                           response_deserializer=real_client.images_pb2.CreateImageResponse.FromString)
    response = call(raw, metadata=[("containerd-namespace", run.ns)], timeout=10)
    assert response.image.created_at != EPOCH
    assert response.image.created_at == response.image.updated_at


def _field_number(message: str, field: str, default: int) -> int:
    """The 2.x field number, from our proto when it has the field (1.6's proto does not)."""
    from tests.compat.grpc_client import api
    fields = getattr(api("services.images.v1.images_pb2"), message).DESCRIPTOR.fields_by_name
    return fields[field].number if field in fields else default


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_delimited(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _check_delete_target(client: Client) -> None:
    """2.x: Delete with target.digest deletes only when it matches; a mismatch is NotFound."""
    pb = client.images_pb2
    _require_field(pb.DeleteImageRequest, "target")
    run = _ns_run(client, "compat-delete-target")
    assert run.create(name="t:1", digest=scenario.D256).ok
    wrong = pb.DeleteImageRequest(name="t:1", target=run.image("t:1", digest=scenario.D256B).target)
    out = client.call(client.images.Delete, wrong, run.ns)
    assert out.code == grpc.StatusCode.NOT_FOUND, str(out)
    assert out.details == f'image "t:1" has target {scenario.D256}, not {scenario.D256B}: not found'
    assert run.get("t:1").ok
    missing = pb.DeleteImageRequest(name="t:missing", target=run.image("t:1").target)
    assert client.call(client.images.Delete, missing, run.ns).code == grpc.StatusCode.NOT_FOUND
    right = pb.DeleteImageRequest(name="t:1", target=run.image("t:1", digest=scenario.D256).target)
    assert client.call(client.images.Delete, right, run.ns).ok
    assert run.get("t:1").code == grpc.StatusCode.NOT_FOUND
    # An empty target digest means "no check", as in 2.x.
    assert run.create(name="t:2").ok
    empty = pb.DeleteImageRequest(name="t:2", target=pb.Image().target)
    assert client.call(client.images.Delete, empty, run.ns).ok
    assert client.call(client.images.Delete, pb.DeleteImageRequest(name="t:2"), run.ns).code == \
        grpc.StatusCode.NOT_FOUND


def test_delete_target_check_ours(our_client: Client) -> None:
    if SELFTEST:
        pytest.skip("self-test mode: the 'ours' side is containerd 1.6, which lacks this feature")
    _check_delete_target(our_client)


def test_delete_target_containerd(release: Release, real_client: Client) -> None:
    if CHECKS_DELETE_TARGET[release.minor]:
        _check_delete_target(real_client)
        return
    # 1.6/1.7's DeleteImageRequest has no field 3: a mismatching target does not stop the delete.
    run = _ns_run(real_client, "compat-delete-target")
    assert run.create(name="t:1", digest=scenario.D256).ok
    raw = real_client.images_pb2.DeleteImageRequest(name="t:1").SerializeToString()
    wrong = real_client.descriptor_pb2.Descriptor(media_type=scenario.MANIFEST, digest=scenario.D256B, size=1)
    raw += _tag(_field_number("DeleteImageRequest", "target", 3), 2) + _len_delimited(wrong.SerializeToString())
    call = real_client.channel.unary_unary("/containerd.services.images.v1.Images/Delete",
                                           request_serializer=None, response_deserializer=None)
    call(raw, metadata=[("containerd-namespace", run.ns)], timeout=10)
    assert run.get("t:1").code == grpc.StatusCode.NOT_FOUND
