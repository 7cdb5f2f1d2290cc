"""Shared pieces of the benchmark scripts: machine facts, formatting, output.

Both bench/engine_bench.py and bench/server_bench.py print a Markdown table of
reference time / our time and write the raw numbers as JSON under bench/out/
(gitignored), with the facts about the machine that make the numbers
meaningful (cores, CPU, memory, the disk the files lived on).
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import types
from typing import Any, Optional

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"


class BenchError(Exception):
    """A benchmark could not run; the text says why in one line."""


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def disk_facts(path: pathlib.Path) -> str:
    """Device, filesystem type and size of the file system holding `path`."""
    out = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if len(lines) < 2:
        return "unknown"
    fields = lines[-1].split()
    device, fstype, size = fields[0], fields[1], fields[2]
    rotational = "?"
    name = os.path.basename(device)
    rot = pathlib.Path(f"/sys/block/{name}/queue/rotational")
    if rot.exists():
        rotational = "rotational" if rot.read_text().strip() == "1" else "non-rotational"
    virt = _first_line(["systemd-detect-virt"]) if shutil.which("systemd-detect-virt") else "unknown"
    return f"{device} ({fstype}, {size}, {rotational}, virtualisation: {virt})"


def machine_facts(data_dir: pathlib.Path) -> dict[str, Any]:
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "disk": disk_facts(data_dir),
        "python": sys.version.split()[0],
        "go": _first_line(["go", "version"]) if shutil.which("go") else "missing",
        "cc": _first_line(["cc", "--version"]) if shutil.which("cc") else "missing",
        "git_commit": _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "loadavg": load_average(),
        # caps the send buffer the server asks for (server/h2/limits.py send_buffer)
        "wmem_max": _sysctl("net/core/wmem_max"),
    }


def _sysctl(name: str) -> str:
    try:
        return pathlib.Path("/proc/sys", name).read_text().strip()
    except OSError:
        return "unknown"


def load_average() -> str:
    """1/5/15-minute load: other work on a 2-core machine skews every number."""
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def facts_markdown(facts: dict[str, Any]) -> str:
    return (f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['memory']} RAM, "
            f"kernel {facts['kernel']} (net.core.wmem_max {facts.get('wmem_max', '?')}); disk {facts['disk']}; Python {facts['python']}; "
            f"{facts['go']}; commit {facts['git_commit']}; run {facts['date_utc']}; "
            f"load average at the end {facts.get('loadavg', '?')}.")


def fmt_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_ratio(reference: Optional[float], ours: Optional[float]) -> str:
    """reference / ours: above 1.0 means boltimages is faster."""
    if reference is None or ours is None or ours <= 0:
        return "—"
    return f"{reference / ours:.2f}×"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(stem: str, payload: dict[str, Any], markdown: str) -> pathlib.Path:
    """bench/out/<stem>-<stamp>.{json,md} plus <stem>-latest.{json,md}."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(payload, indent=2, sort_keys=True)
    for name in (f"{stem}-{stamp}", f"{stem}-latest"):
        (OUT_DIR / f"{name}.json").write_text(text + "\n")
        (OUT_DIR / f"{name}.md").write_text(markdown + "\n")
    return OUT_DIR / f"{stem}-latest.json"


def python_env() -> dict[str, str]:
    """Environment for a child Python running boltimages.

    The dev tree (plugin/) is used when the engine was built in place there;
    otherwise the installed package is, since a fresh clone's plugin/ has
    neither the compiled engine nor the generated protos.
    """
    env = dict(os.environ)
    plugin = REPO / "plugin"
    if any((plugin / "boltimages").glob("_bolt*.so")):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin), env.get("PYTHONPATH")]))
    return env


def import_boltimages(module: str) -> types.ModuleType:
    """boltimages.<module>, from the installed package or else this checkout's plugin/.

    The installed package wins so a plugin/ without a built engine does not
    shadow a working install; plugin/ is the fallback for the dev tree.
    """
    name = f"boltimages.{module}"
    try:
        return importlib.import_module(name)
    except ImportError:
        plugin = str(REPO / "plugin")
        if plugin not in sys.path:
            sys.path.insert(0, plugin)
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise BenchError(f"cannot import {name} from this checkout ({exc}); "
                             "build the extension first (python setup.py build_ext --inplace)") from exc


def build_go_program(src: pathlib.Path, build_dir: pathlib.Path, purpose: str, what: str) -> pathlib.Path:
    """Build one Go file in GOPATH mode against Debian's gocode, reusing the
    binary while it is newer than the source. `purpose` names what is lost
    without Go, `what` the program whose build failed."""
    if not shutil.which("go"):
        raise BenchError(f"go is not installed; {purpose} cannot be built")
    binary = build_dir / src.stem
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    gopath = build_dir / "gopath"
    gopath.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:/usr/share/gocode", GOFLAGS="")
    env.setdefault("GOCACHE", str(build_dir / "gocache"))
    proc = subprocess.run(["go", "build", "-o", str(binary), str(src)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"building {what} failed: " + proc.stderr.strip().replace("\n", " | "))
    return binary
