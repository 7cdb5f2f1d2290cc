"""Image/label/digest/namespace validation with containerd 1.6.20's exact messages
(each message below was returned by a real containerd 1.6.20 for the same input)."""

from __future__ import annotations

import pytest

from boltimages.errors import FailedPrecondition, InvalidArgument, go_quote
from boltimages.store.validation import namespace_required
from boltimages.store.images import Descriptor, Image, validate_image

D = "sha256:" + "2d" * 32
MT = "application/vnd.oci.image.manifest.v1+json"


def image(name="n", digest=D, size=123, media_type=MT, labels=None) -> Image:
    return Image(name=name, labels=labels, target=Descriptor(media_type=media_type, digest=digest, size=size))


@pytest.mark.parametrize("digest,reason", [
    ("", "invalid checksum digest format"),
    ("sha256", "invalid checksum digest format"),
    ("sha256:", "invalid checksum digest format"),
    (":abc", "invalid checksum digest format"),
    ("sha256:abc", "invalid checksum digest length"),
    ("sha256:" + "G" * 64, "invalid checksum digest format"),
    ("sha256:" + "A" * 64, "invalid checksum digest format"),
    ("md5:abc", "unsupported digest algorithm"),
    ("Md5:abc", "invalid checksum digest format"),
    ("sha384:" + "a" * 64, "invalid checksum digest length"),
])
def test_bad_digests(digest: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_image(image(digest=digest))
    assert str(info.value) == f"Target.Digest {go_quote(digest)} invalid: {reason}: invalid argument"


@pytest.mark.parametrize("digest", ["sha256:" + "0a" * 32, "sha384:" + "a" * 96, "sha512:" + "a" * 128])
def test_good_digests(digest: str) -> None:
    validate_image(image(digest=digest))


def test_other_fields() -> None:
    for size in (0, -1):
        with pytest.raises(InvalidArgument, match="^Target.Size must be greater than zero: invalid argument$"):
            validate_image(image(size=size))
    with pytest.raises(InvalidArgument, match="^Target.MediaType must be set: invalid argument$"):
        validate_image(image(media_type=""))
    with pytest.raises(InvalidArgument, match="^image name must not be empty: invalid argument$"):
        validate_image(image(name=""))


def test_label_size_limit() -> None:
    validate_image(image(labels={"k": "v" * 4095}))  # exactly 4096 bytes is fine
    with pytest.raises(InvalidArgument) as info:
        validate_image(image(labels={"k" * 20: "v" * 4090}))
    assert str(info.value) == ("image.Labels: label key and value length (4110 bytes) greater than maximum "
                               "size (4096 bytes), key: kkkkkkkkkkkkkkkkkkkk: invalid argument")
    with pytest.raises(InvalidArgument) as info:  # 2.x quotes at most 64 bytes of the key
        validate_image(image(labels={"k" * 4097: ""}))
    assert str(info.value).endswith(f"key: {'k' * 64}: invalid argument")
    with pytest.raises(InvalidArgument):  # bytes, not characters
        validate_image(image(labels={"k": "\u00e9" * 2048}))


def test_namespace_rules() -> None:
    for missing in (None, ""):
        with pytest.raises(FailedPrecondition) as info:
            namespace_required(missing)
        assert str(info.value) == "namespace is required: failed precondition"
    with pytest.raises(InvalidArgument) as bad:
        namespace_required("a--b")
    assert str(bad.value) == ('namespace validation: identifier "a--b" must match '
                              "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument")
    with pytest.raises(InvalidArgument, match="greater than maximum length \\(76 characters\\)"):
        namespace_required("a" * 77)
    for good in ("default", "k8s.io", "moby", "a_b-c.d", "a" * 76):
        assert namespace_required(good) == good
    for bad_name in ("-a", "a-", "a\n", "a b", "\u00e9"):
        with pytest.raises(InvalidArgument):
            namespace_required(bad_name)


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n\x01\u00e9\u2028') == '"a\\"b\\\\c\\n\\x01\u00e9\\u2028"'


@pytest.mark.parametrize("digest,reason", [
    ("md5:!!", "invalid checksum digest format"),     # unknown algorithm, not even digest-shaped
    ("md5:abc", "unsupported digest algorithm"),
    ("sha256:", "invalid checksum digest format"),
    ("sha256:" + "ab" * 32, None),
])
def test_one_digest_rule_for_images_leases_and_content(tmp_path, digest, reason) -> None:
    """go-digest's Validate, the one copy: the lease store used to answer
    'unsupported digest algorithm' for md5:!! where containerd says 'format'."""
    from boltimages import bolt
    from boltimages.store import leases, validation
    assert validation.digest_problem(digest) == reason
    with bolt.open(str(tmp_path / "m.db"), create=True) as db, db.begin(write=True) as tx:
        leases.create(tx, "default", "l1", {})
        resource = leases.Resource(id=digest, type="content")
        if reason is None:
            leases.add_resource(tx, "default", "l1", resource)
        else:
            with pytest.raises(InvalidArgument) as info:
                leases.add_resource(tx, "default", "l1", resource)
            assert str(info.value) == f"invalid content resource id {digest}: {reason}: invalid argument"
