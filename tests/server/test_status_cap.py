"""Status messages are capped by the bytes they take in the grpc-message
trailer (UTF-8, percent-encoded), not by characters: a capped message of
CJK or emoji is as small on the wire as an ASCII one."""

from __future__ import annotations

import grpc
import pytest

from boltimages.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from boltimages.server import status
from boltimages.server.h2.grpc_call import percent_decode, percent_encode

from .conftest import md

CAP = status.MAX_STATUS_MESSAGE

LONG_MESSAGES = {
    "ascii": "image \"" + "a" * 50_000 + "\": not found",
    "cjk": "镜像「" + "容器镜像名称" * 5_000 + "」不存在",
    "emoji": "🐳" * 3_000 + "📦" * 3_000,
    "mixed": ("名前%é🐳 " * 2_000) + "end",
    "control": "\x01\t\n%" * 5_000,
}


def test_wire_size_is_the_percent_encoded_length() -> None:
    for text in ("plain", "100%", "é", "镜", "🐳", "\x00\n", "a%b镜🐳"):
        assert status.wire_size(text) == len(percent_encode(text))


@pytest.mark.parametrize("kind", sorted(LONG_MESSAGES))
def test_long_message_is_capped_by_bytes_on_the_wire(kind: str) -> None:
    message = LONG_MESSAGES[kind]
    capped = status.cap_message(message)
    wire = percent_encode(capped)
    assert len(wire) <= CAP
    assert len(wire) > CAP - 200  # uses the room it has, whatever the script
    head, rest = capped.split("...[", 1)
    count, tail = rest.split(" characters omitted]...", 1)
    # cut on character boundaries: the pieces are the message's own head and tail
    assert message.startswith(head) and message.endswith(tail)
    assert len(head) + int(count) + len(tail) == len(message)
    assert head and tail
    assert percent_decode(wire) == capped  # decodes to valid text: no split character


@pytest.mark.parametrize("message", ["short", "镜" * (CAP // 9), "🐳" * (CAP // 12), "a" * CAP])
def test_message_within_the_cap_is_untouched(message: str) -> None:
    assert len(percent_encode(message)) <= CAP
    assert status.cap_message(message) == message


def test_one_byte_over_is_capped() -> None:
    message = "a" * (CAP - 5) + "é"  # 4092 characters, 4097 bytes as sent (é is %C3%A9)
    assert len(message) < CAP and len(percent_encode(message)) == CAP + 1
    assert len(percent_encode(status.cap_message(message))) <= CAP


def test_server_caps_a_cjk_not_found(channel) -> None:
    """End to end: Images/Get of a huge CJK name is NotFound with a trailer
    under the cap, not RESOURCE_EXHAUSTED from the client's metadata limit."""
    name = "镜像" * 20_000
    stub = images_pb2_grpc.ImagesStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(images_pb2.GetImageRequest(name=name), metadata=md("default"), timeout=30)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    details = err.value.details()
    assert len(percent_encode(details)) <= CAP
    assert "characters omitted" in details and "镜像" in details


class _OddFailure(Exception):
    """Stands for a bug: an exception no servicer maps to a status."""


def test_an_unexpected_exception_shows_no_class_name_or_bytes_repr() -> None:
    code, message = status.to_status(_OddFailure(b"\x00secret"))
    assert code == grpc.StatusCode.INTERNAL
    assert "_OddFailure" not in message and "b'" not in message and "secret" not in message
    assert message == "internal error in boltimages; the server log has the details"
