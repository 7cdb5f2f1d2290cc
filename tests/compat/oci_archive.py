"""Build small but real OCI image archives for `ctr images import`.

Each image gets a genuine gzip'ed layer tar (one file whose content depends on
the seed, so every image has distinct digests), an image config with the
layer's diff_id, a manifest, and the archive's index.json naming the image with
org.opencontainers.image.ref.name, plus oci-layout. Timestamps inside are fixed
so archives are reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import tarfile
from dataclasses import dataclass, field
from typing import Iterable

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class BuiltImage:
    ref: str                   # value of org.opencontainers.image.ref.name
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer_digest: str
    blobs: dict = field(default_factory=dict)   # digest -> bytes


def build_image(ref: str, seed: str) -> BuiltImage:
    layer_tar = _tar_bytes({f"seed/{seed}.txt": f"boltimages compat image {seed}\n".encode()})
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["SEED=" + seed]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        "history": [{"created_by": "boltimages compat oci_archive"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": _digest(layer_gz), "size": len(layer_gz)}],
    }, sort_keys=True).encode()
    blobs = {_digest(b): b for b in (layer_gz, config, manifest)}
    return BuiltImage(ref, _digest(manifest), len(manifest), _digest(config), _digest(layer_gz), blobs)


def build_index_image(ref: str, seed: str, platforms=(("linux", "amd64"), ("linux", "arm64"))) -> BuiltImage:
    """A multi-platform image: an OCI index over one manifest per platform."""
    blobs: dict = {}
    entries = []
    for os_name, arch in platforms:
        one = build_image(ref, f"{seed}-{os_name}-{arch}")
        # rewrite the config's platform so each manifest really is for its platform
        config = json.loads(one.blobs[one.config_digest])
        config["os"], config["architecture"] = os_name, arch
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = json.loads(one.blobs[one.manifest_digest])
        manifest["config"] = {"mediaType": CONFIG_TYPE, "digest": _digest(config_bytes), "size": len(config_bytes)}
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        blobs[one.layer_digest] = one.blobs[one.layer_digest]
        blobs[_digest(config_bytes)] = config_bytes
        blobs[_digest(manifest_bytes)] = manifest_bytes
        entries.append({"mediaType": MANIFEST_TYPE, "digest": _digest(manifest_bytes), "size": len(manifest_bytes),
                        "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries}, sort_keys=True).encode()
    blobs[_digest(index)] = index
    image = BuiltImage(ref, _digest(index), len(index), "", "", blobs)
    image.media_type = INDEX_TYPE
    return image


def write_archive(path: pathlib.Path, images: Iterable[BuiltImage]) -> pathlib.Path:
    """Write an OCI image-layout tar holding `images`; returns `path`."""
    images = list(images)
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    manifests = []
    for image in images:
        for digest, data in image.blobs.items():
            alg, hexpart = digest.split(":", 1)
            files[f"blobs/{alg}/{hexpart}"] = data
        entry = {"mediaType": getattr(image, "media_type", MANIFEST_TYPE), "digest": image.manifest_digest,
                 "size": image.manifest_size, "annotations": {REF_NAME: image.ref}}
        if entry["mediaType"] == MANIFEST_TYPE:
            entry["platform"] = {"architecture": "amd64", "os": "linux"}
        manifests.append(entry)
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE,
                                      "manifests": manifests}, sort_keys=True).encode()
    path.write_bytes(_tar_bytes(files))
    return path
