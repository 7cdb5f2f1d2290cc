"""The real-bbolt oracle: build the Go program in this directory and drive it,
plus the Python twins of its dump format and op-stream applier so the
boltimages engine and go.etcd.io/bbolt can be compared line for line.

Layout of a comparison:
  * ``OpGenerator(seed).stream(...)`` produces a list of JSON-able op dicts;
  * ``Oracle.apply(path, ops)`` applies them with real bbolt and returns one
    result per op; ``apply_ops(path, ops, oracle)`` does the same with our
    engine; the two result lists must be equal;
  * ``Oracle.dump(path)`` and ``dump_file(path)`` print the logical content of
    a file in the same canonical form (see oracle.go for the format).

The Go binary is cached under ~/.cache/boltimages-oracle/<hash of the source
and toolchain> so only the first test session pays for ``go build``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

ORACLE_SOURCE = Path(__file__).with_name("oracle.go")
GOCODE = "/usr/share/gocode"
BBOLT_SOURCE = os.path.join(GOCODE, "src", "go.etcd.io", "bbolt")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "boltimages-oracle"

# Error names both sides report; they are the names of the bolt exception
# classes and of the matching bbolt Err* values (see errNames in oracle.go).
ERROR_NAMES = frozenset({
    "BucketNotFound", "BucketExists", "BucketNameRequired", "KeyRequired", "KeyTooLarge",
    "ValueTooLarge", "IncompatibleValue", "TxClosed", "TxNotWritable",
})

# Values longer than this are represented by length and sha256 in dumps.
INLINE_REPR_MAX = 64


class OracleError(RuntimeError):
    """The Go oracle failed (build error, crash, or unexpected bbolt error)."""


# ------------------------------------------------------------------ build ----

def _toolchain_id(go: str) -> str:
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def build_oracle(go: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Build (or reuse) the oracle binary; returns its path."""
    digest = hashlib.sha256()
    digest.update(ORACLE_SOURCE.read_bytes())
    digest.update(_toolchain_id(go).encode())
    # bbolt's own sources take part so a package upgrade rebuilds the oracle.
    for name in sorted(os.listdir(BBOLT_SOURCE)):
        if name.endswith(".go") and not name.endswith("_test.go"):
            digest.update(name.encode())
            digest.update(Path(BBOLT_SOURCE, name).read_bytes())
    target = cache_dir / digest.hexdigest()[:16] / "oracle"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oracle-build-") as tmp:
        env = dict(os.environ, GO111MODULE="off", GOPATH=f"{tmp}:{GOCODE}",
                   GOCACHE=str(cache_dir / "gocache"), GOFLAGS="", CGO_ENABLED="0")
        src = Path(tmp, "oracle.go")
        shutil.copyfile(ORACLE_SOURCE, src)
        out = Path(tmp, "oracle")
        proc = subprocess.run([go, "build", "-o", str(out), str(src)], cwd=tmp, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise OracleError(f"go build of the oracle failed:\n{proc.stderr}")
        # Rename within one directory is atomic, so concurrent sessions are safe.
        staged = target.with_name(f"oracle.{os.getpid()}")
        shutil.copyfile(out, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, target)
    return target


@dataclass
class Oracle:
    """Runs subcommands of the built Go oracle, each in its own process (a
    corrupt file can make bbolt fault, which must not take the tests down)."""

    binary: Path
    timeout: float = 300.0

    def run(self, *args: str, input: Optional[bytes] = None,
            timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], input=input, capture_output=True,
                              timeout=timeout or self.timeout)

    def _ok(self, proc: subprocess.CompletedProcess, what: str) -> bytes:
        if proc.returncode != 0:
            raise OracleError(f"oracle {what} exited {proc.returncode}: "
                              f"{proc.stderr.decode(errors='replace')[-2000:]}")
        return proc.stdout

    def check(self, path: os.PathLike | str) -> list[str]:
        """bbolt's tx.Check problems ([] when clean). Raises OracleError when
        bbolt cannot even open the file or crashes."""
        proc = self.run("check", str(path))
        if proc.returncode not in (0, 1):
            raise OracleError(f"oracle check {path} exited {proc.returncode}: "
                              f"{proc.stderr.decode(errors='replace')[-2000:]}")
        return proc.stdout.decode(errors="replace").splitlines()

    def dump(self, path: os.PathLike | str) -> list[str]:
        return self._ok(self.run("dump", str(path)), "dump").decode().splitlines()

    def dump_bytes(self, data: bytes, scratch: os.PathLike | str) -> list[str]:
        """Dump a file image given as bytes (written to `scratch` first)."""
        Path(scratch).write_bytes(data)
        return self.dump(scratch)

    def info(self, path: os.PathLike | str) -> dict[str, Any]:
        return json.loads(self._ok(self.run("info", str(path)), "info"))

    def gen(self, path: os.PathLike | str, seed: int, page_size: int = 4096, *,
            no_freelist_sync: bool = False, big_values: bool = False,
            large_freelist: bool = False, txs: int = 30, ops: int = 200) -> None:
        args = ["gen", str(path), "--seed", str(seed), "--page-size", str(page_size),
                "--txs", str(txs), "--ops", str(ops)]
        if no_freelist_sync:
            args.append("--no-freelist-sync")
        if big_values:
            args.append("--big-values")
        if large_freelist:
            args.append("--large-freelist")
        self._ok(self.run(*args), "gen")

    def apply(self, path: os.PathLike | str, ops: Iterable[dict], *, page_size: int = 0,
              no_freelist_sync: bool = False) -> list[Any]:
        """Apply an op stream with real bbolt; one result dict per op."""
        args = ["apply", str(path)]
        if page_size:
            args += ["--page-size", str(page_size)]
        if no_freelist_sync:
            args.append("--no-freelist-sync")
        data = "".join(json.dumps(op) + "\n" for op in ops).encode()
        out = self._ok(self.run(*args, input=data), "apply")
        return [json.loads(line) for line in out.decode().splitlines()]


# ------------------------------------------------------- canonical format ----

def pattern_value(seed: int, length: int) -> bytes:
    """Generated value; must match patternValue in oracle.go."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (length // len(block) + 1))[:length]


def value_repr(value: bytes) -> str:
    if len(value) <= INLINE_REPR_MAX:
        return value.hex()
    return f"#{len(value)}:{hashlib.sha256(value).hexdigest()}"


def op_value(op: dict) -> bytes:
    if op.get("value") is not None:
        return bytes.fromhex(op["value"])
    return pattern_value(op.get("vseed", 0), op.get("vlen", 0))


def _dump_bucket(out: list[str], bucket: Any, path: list[str]) -> None:
    out.append(f"B {'/'.join(path)} {bucket.sequence()}")
    for key, value in bucket.items():
        if value is None:
            child = bucket.bucket(key)
            if child is None:
                raise AssertionError(f"engine listed {key.hex()} in /{'/'.join(path)} as a "
                                     "bucket but bucket() returns None")
            _dump_bucket(out, child, path + [key.hex()])
        else:
            out.append(f"K {'/'.join(path)} {key.hex()} {value_repr(value)}")


def dump_tx(tx: Any) -> list[str]:
    """Canonical dump of a boltimages transaction (same lines as `oracle dump`)."""
    out: list[str] = []
    for key, value in tx.root.items():
        if value is None:
            _dump_bucket(out, tx.bucket(key), [key.hex()])
        else:
            # bbolt has no API for values in the root bucket; show them anyway.
            out.append(f"K  {key.hex()} {value_repr(value)}")
    return out


def dump_file(path: os.PathLike | str) -> list[str]:
    from boltimages import bolt

    with bolt.open(path, read_only=True) as db:
        with db.begin() as tx:
            return dump_tx(tx)


# ---------------------------------------------------------- our applier ----

def _resolve(tx: Any, path: list[str]) -> Any:
    from boltimages import bolt

    bucket = tx.bucket(bytes.fromhex(path[0]))
    for name in path[1:]:
        if bucket is None:
            break
        bucket = bucket.bucket(bytes.fromhex(name))
    if bucket is None:
        raise bolt.BucketNotFound("no such bucket path")
    return bucket


def _kv(item: Optional[tuple[bytes, Optional[bytes]]]) -> Any:
    if item is None:
        return None
    key, value = item
    return [key.hex(), None if value is None else value_repr(value)]


def _apply_data_op(tx: Any, op: dict) -> Any:
    """Run one data op; returns the result value (errors propagate)."""
    kind = op["op"]
    path = op["path"]
    if kind in ("create_bucket", "create_bucket_if_not_exists", "delete_bucket"):
        parent = tx if len(path) == 1 else _resolve(tx, path[:-1])
        name = bytes.fromhex(path[-1])
        if kind == "create_bucket":
            parent.create_bucket(name)
        elif kind == "create_bucket_if_not_exists":
            parent.create_bucket_if_not_exists(name)
        else:
            parent.delete_bucket(name)
        return None
    bucket = _resolve(tx, path)
    if kind == "put":
        bucket.put(bytes.fromhex(op["key"]), op_value(op))
        return None
    if kind == "delete":
        bucket.delete(bytes.fromhex(op["key"]))
        return None
    if kind == "get":
        value = bucket.get(bytes.fromhex(op["key"]))
        return None if value is None else value_repr(value)
    if kind == "sequence":
        return bucket.sequence()
    if kind == "set_sequence":
        bucket.set_sequence(op["n"])
        return None
    if kind == "next_sequence":
        return bucket.next_sequence()
    if kind == "cursor":
        cursor = bucket.cursor()
        out: list[Any] = []
        for move in op["moves"]:
            name = move[0]
            if name == "delete":
                try:
                    cursor.delete()
                    out.append("deleted")
                except Exception as exc:  # noqa: BLE001 - classified below
                    out.append(_error_name(exc))
                continue
            if name == "seek":
                out.append(_kv(cursor.seek(bytes.fromhex(move[1]))))
            else:
                out.append(_kv(getattr(cursor, name)()))
        return out
    raise ValueError(f"unknown op {kind!r}")


def _error_name(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in ERROR_NAMES:
        return name
    raise exc


def apply_ops(path: os.PathLike | str, ops: Iterable[dict], oracle: Optional[Oracle] = None,
              **open_options: Any) -> list[Any]:
    """Apply an op stream with the boltimages engine; same results as
    Oracle.apply. A "check" op closes the database, runs real bbolt's Check
    and our check_file on it, and reopens: its result lists every problem
    either reports (bbolt's as is, ours prefixed "engine: ")."""
    from boltimages import bolt

    open_options.setdefault("no_sync", True)
    results: list[Any] = []
    db = bolt.open(path, **open_options)
    reopen = {k: v for k, v in open_options.items() if k != "page_size"}
    tx = None
    try:
        for op in ops:
            kind = op["op"]
            if kind in ("commit", "rollback"):
                if tx is not None:
                    getattr(tx, kind)()
                    tx = None
                results.append({"r": None})
            elif kind == "check":
                assert tx is None, "check inside a write tx"
                db.close()
                problems = [] if oracle is None else oracle.check(path)
                problems += [f"engine: {p}" for p in bolt.check_file(path)]
                results.append({"r": problems})
                db = bolt.open(path, **reopen)
            else:
                if tx is None:
                    tx = db.begin(write=True)
                try:
                    results.append({"r": _apply_data_op(tx, op)})
                except Exception as exc:  # noqa: BLE001 - non-bolt errors re-raised
                    results.append({"e": _error_name(exc)})
        if tx is not None:
            tx.commit()
            tx = None
    finally:
        if tx is not None and not tx.closed:
            tx.rollback()
        db.close()
    return results


# -------------------------------------------------------- op generation ----

@dataclass
class _Model:
    """What the generator believes the database holds, to aim ops at real
    keys and buckets. Results are compared between engines, not against the
    model, so it only has to be roughly right; it is kept exact anyway."""

    keys: set = field(default_factory=set)
    buckets: dict = field(default_factory=dict)


class OpGenerator:
    """Seeded random op streams in the format of oracle.go's `apply`.

    It never deletes a bucket whose subtree was written earlier in the same
    transaction: bbolt 1.3.6 leaks pages there (see the facts file), which
    would make real bbolt's side fail its own Check.
    """

    def __init__(self, seed: int, *, big_values: bool = False, deep: bool = False,
                 max_key: int = 24) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.big_values = big_values
        self.deep = deep
        self.max_key = max_key
        self.model = _Model()
        self._vseed = seed * 1_000_003

    # -- helpers
    def _bucket_paths(self, model: _Model, prefix: tuple = ()) -> list[tuple]:
        out = []
        for name, child in model.buckets.items():
            path = prefix + (name,)
            out.append(path)
            out.extend(self._bucket_paths(child, path))
        return out

    @staticmethod
    def _node(model: _Model, path: tuple) -> Optional[_Model]:
        node = model
        for name in path:
            node = node.buckets.get(name)
            if node is None:
                return None
        return node

    def _key(self) -> bytes:
        r = self.rng
        x = r.random()
        if x < 0.02:
            return bytes(r.getrandbits(8) for _ in range(r.randint(100, 3000)))
        if x < 0.5:
            # Short keys from a small alphabet collide often.
            return bytes(r.choice(b"abcdef") for _ in range(r.randint(1, 4)))
        return bytes(r.getrandbits(8) for _ in range(r.randint(1, self.max_key)))

    def _value_fields(self) -> dict:
        r = self.rng
        x = r.random()
        if x < 0.05:
            return {"value": ""}
        if x < 0.75:
            return {"value": bytes(r.getrandbits(8) for _ in range(r.randint(1, 120))).hex()}
        self._vseed += 1
        if x < 0.97:
            return {"vlen": r.randint(200, 6000), "vseed": self._vseed}
        if self.big_values and r.random() < 0.5:
            return {"vlen": r.randint(1 << 20, 3 << 20), "vseed": self._vseed}
        return {"vlen": r.randint(9000, 70000), "vseed": self._vseed}

    def stream(self, txs: int = 20, ops_per_tx: int = 60, check_every: int = 5,
               rollback_rate: float = 0.15) -> list[dict]:
        """Ops for `txs` transactions, each ending in commit or rollback; a
        "check" op follows every `check_every`-th commit and the last one."""
        out: list[dict] = []
        for t in range(txs):
            working = copy.deepcopy(self.model)
            touched: set[tuple] = set()
            for _ in range(self.rng.randint(1, ops_per_tx)):
                out.extend(self._one(working, touched))
            if self.rng.random() < rollback_rate:
                out.append({"op": "rollback"})
            else:
                out.append({"op": "commit"})
                self.model = working
                if (t + 1) % check_every == 0:
                    out.append({"op": "check"})
        if not out or out[-1]["op"] != "check":
            out.append({"op": "check"})
        return out

    def _one(self, m: _Model, touched: set) -> list[dict]:
        r = self.rng
        paths = self._bucket_paths(m)
        if not paths or r.random() < 0.04:
            name = self._key()[:8] if r.random() < 0.9 else b""
            kind = "create_bucket" if r.random() < 0.7 else "create_bucket_if_not_exists"
            self._create(m, (), name, kind, touched)
            return [{"op": kind, "path": [name.hex()]}]
        path = r.choice(paths)
        node = self._node(m, path)
        assert node is not None
        hpath = [p.hex() for p in path]
        x = r.random()
        if x < 0.40:
            key = r.choice(sorted(node.keys)) if node.keys and r.random() < 0.3 else self._key()
            if r.random() < 0.003:
                key = b""
            elif r.random() < 0.003:
                key = b"k" * 32769
            op = {"op": "put", "path": hpath, "key": key.hex(), **self._value_fields()}
            touched.add(path)
            if key and len(key) <= 32768 and key not in node.buckets:
                node.keys.add(key)
            return [op]
        if x < 0.47 and self.deep:
            # A sorted run of keys grows the tree a level or two.
            start = r.getrandbits(32)
            prefix = self._key()[:6]
            ops = []
            for i in range(r.randint(100, 800)):
                key = prefix + (start + i).to_bytes(8, "big")
                node.keys.add(key)
                ops.append({"op": "put", "path": hpath, "key": key.hex(),
                            "value": bytes(r.getrandbits(8) for _ in range(r.randint(0, 40))).hex()})
            touched.add(path)
            return ops
        if x < 0.62:
            if node.keys and r.random() < 0.85:
                key = r.choice(sorted(node.keys))
            elif node.buckets and r.random() < 0.5:
                key = r.choice(sorted(node.buckets))
            else:
                key = self._key()
            node.keys.discard(key)
            touched.add(path)
            return [{"op": "delete", "path": hpath, "key": key.hex()}]
        if x < 0.65 and node.keys:
            # Empty the bucket of plain keys, sometimes leaving it empty.
            ops = [{"op": "delete", "path": hpath, "key": k.hex()} for k in sorted(node.keys)]
            node.keys.clear()
            touched.add(path)
            return ops
        if x < 0.72:
            name = self._key()[:8]
            if node.keys and r.random() < 0.1:
                name = r.choice(sorted(node.keys))
            kind = "create_bucket" if r.random() < 0.7 else "create_bucket_if_not_exists"
            self._create(node, path, name, kind, touched)
            return [{"op": kind, "path": hpath + [name.hex()]}]
        if x < 0.76:
            # Delete a bucket: an existing one when bbolt can do it without leaking.
            candidates = [p for p in paths if not any(t[:len(p)] == p for t in touched)]
            if candidates and r.random() < 0.85:
                target = r.choice(candidates)
            else:
                target = path + (self._key()[:6],)
                if any(t[:len(target)] == target for t in touched):
                    return []
            parent = self._node(m, target[:-1])
            if parent is not None:
                parent.buckets.pop(target[-1], None)
            touched.add(target[:-1])
            return [{"op": "delete_bucket", "path": [p.hex() for p in target]}]
        if x < 0.82:
            key = r.choice(sorted(node.keys)) if node.keys and r.random() < 0.7 else self._key()
            return [{"op": "get", "path": hpath, "key": key.hex()}]
        if x < 0.88:
            touched.add(path)
            y = r.random()
            if y < 0.4:
                return [{"op": "next_sequence", "path": hpath}]
            if y < 0.8:
                return [{"op": "set_sequence", "path": hpath, "n": r.getrandbits(r.randint(1, 63))}]
            return [{"op": "sequence", "path": hpath}]
        # Cursor walk. Results are compared up to the first None only (see
        # truncate_cursor_results): what a cursor does after running off an
        # end is not part of bbolt's contract.
        if node.keys and r.random() < 0.2:
            # Delete through a cursor positioned exactly on a key.
            key = r.choice(sorted(node.keys))
            node.keys.discard(key)
            touched.add(path)
            return [{"op": "cursor", "path": hpath, "moves": [["seek", key.hex()], ["delete"]]}]
        # bbolt 1.3.6's Last and Prev do not skip leaves emptied earlier in
        # the same tx (they report the end instead); only First, Seek and
        # Next do. So backward moves are used on buckets untouched this tx.
        backward = path not in touched
        moves: list[list[str]] = [[r.choice(["first", "last", "seek"] if backward else ["first", "seek"])]]
        if moves[0][0] == "seek":
            moves[0].append(self._key().hex())
        for _ in range(r.randint(0, 8)):
            moves.append([r.choice(["next", "prev"] if backward else ["next"])])
        return [{"op": "cursor", "path": hpath, "moves": moves}]

    def _create(self, parent: _Model, path: tuple, name: bytes, kind: str,
                touched: set) -> None:
        touched.add(path)
        if not name or name in parent.keys:
            return
        touched.add(path + (name,))
        parent.buckets.setdefault(name, _Model())


def truncate_cursor_results(ops: list[dict], results: list[Any]) -> list[Any]:
    """Cut each cursor result after its first None (see OpGenerator._one)."""
    out = []
    for op, res in zip(ops, results):
        if op["op"] == "cursor" and isinstance(res.get("r"), list):
            moves = []
            for item in res["r"]:
                moves.append(item)
                if item is None:
                    break
            res = {"r": moves}
        out.append(res)
    return out


def first_difference(ops: list[dict], ours: list[Any], theirs: list[Any]) -> Optional[str]:
    """Describe the first op whose result differs, or None when all agree."""
    ours = truncate_cursor_results(ops, ours)
    theirs = truncate_cursor_results(ops, theirs)
    for i, (op, a, b) in enumerate(zip(ops, ours, theirs)):
        if a != b:
            shown = {k: (v if len(str(v)) < 200 else f"{str(v)[:200]}...") for k, v in op.items()}
            return f"op #{i} {shown}: engine {a!r} != bbolt {b!r}"
    if len(ours) != len(theirs):
        return f"result counts differ: engine {len(ours)} != bbolt {len(theirs)}"
    return None


def first_dump_difference(ours: list[str], theirs: list[str]) -> Optional[str]:
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"dump line {i}: {a[:300]!r} != {b[:300]!r}"
    if len(ours) != len(theirs):
        return f"dump lengths differ: {len(ours)} != {len(theirs)}"
    return None


# -------------------------------------------------------- raw meta pages ----

META_MAGIC = 0xED0CDAED
FREELIST_NONE = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class Meta:
    slot: int
    valid: bool
    page_size: int
    root: int
    freelist: int
    pgid: int
    txid: int


def read_metas(path: os.PathLike | str) -> list[Meta]:
    """Both meta pages, decoded independently of any engine. The page size
    comes from meta 0 when it is valid, else from meta 1 at common sizes."""
    with open(path, "rb") as f:
        head = f.read(4096)

        def decode(slot: int, raw: bytes) -> Meta:
            if len(raw) < 80:
                return Meta(slot, False, 0, 0, 0, 0, 0)
            magic, version, page_size, _flags, root, _seq, freelist, pgid, txid, checksum = \
                struct.unpack_from("<IIIIQQQQQQ", raw, 16)
            valid = (magic == META_MAGIC and version == 2
                     and (checksum == 0 or checksum == fnv1a64(raw[16:72])))
            return Meta(slot, valid, page_size, root, freelist, pgid, txid)

        m0 = decode(0, head)
        sizes = [m0.page_size] if m0.valid else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
        for size in sizes:
            f.seek(size)
            m1 = decode(1, f.read(80))
            if m1.valid and m1.page_size == size:
                break
        return [m0, m1]


def current_meta(path: os.PathLike | str) -> Meta:
    valid = [m for m in read_metas(path) if m.valid]
    if not valid:
        raise ValueError(f"{path}: no valid meta page")
    return max(valid, key=lambda m: m.txid)
