"""Fetch the containerd releases the compat suite runs besides Debian 12's own 1.6.20.

containerd 1.7.24 (Debian trixie) and 2.1.9 (Debian sid) are fetched as .debs with
`apt-get download` through a private sources list, private package lists and a
private archive cache, then unpacked with `dpkg -x` into `.cache/containerd/<version>/`
in this repository. Nothing is installed and the machine's own apt configuration is
never changed: every apt option that names a state directory points into the cache.
Their binaries link only libc, so they run on Debian 12.

    python -m tests.compat.fetch_containerd          # fetch every release not yet here
    python -m tests.compat.fetch_containerd --check  # exit 1 when one is missing

The mirror is the one the machine's apt already uses (read from its sources), so no
host is named here. `.ci/run` calls this before the tests; locally the compat tests
skip a release that is not fetched (and fail when BOLTIMAGES_REQUIRE_COMPAT=1).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# BOLTIMAGES_CONTAINERD_CACHE lets several checkouts share one fetched copy.
CACHE = pathlib.Path(os.environ.get("BOLTIMAGES_CONTAINERD_CACHE") or REPO_ROOT / ".cache" / "containerd")
KEYRING = pathlib.Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# version -> (Debian suite, exact Debian package version)
FETCHED_RELEASES: dict[str, tuple[str, str]] = {
    "1.7.24": ("trixie", "1.7.24~ds1-6+deb13u1"),
    "2.1.9": ("sid", "2.1.9+ds1-5"),
}


class FetchError(RuntimeError):
    """A release could not be fetched; the message says which step failed and why."""


def bin_dir(version: str) -> pathlib.Path:
    """Where the unpacked release keeps containerd, ctr and containerd-shim-runc-v2."""
    return CACHE / version / "usr" / "bin"


def is_fetched(version: str) -> bool:
    directory = bin_dir(version)
    return all((directory / name).is_file() for name in ("containerd", "ctr", "containerd-shim-runc-v2"))


def debian_mirror() -> str:
    """The main Debian archive URI this machine's apt uses (not the security archive)."""
    sources_dir = pathlib.Path("/etc/apt/sources.list.d")
    texts = [p.read_text(errors="replace") for p in sorted(sources_dir.glob("*.sources"))]
    legacy = [pathlib.Path("/etc/apt/sources.list"), *sorted(sources_dir.glob("*.list"))]
    texts += [p.read_text(errors="replace") for p in legacy if p.is_file()]
    uris: list[str] = []
    for text in texts:
        uris += re.findall(r"^URIs:\s*(\S+)", text, re.M)                      # deb822 form
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)      # one-line form
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise FetchError("no Debian archive found in this machine's apt sources "
                     "(looked for a URI ending in /debian)")


def _run(argv: list[str], cwd: Optional[pathlib.Path] = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"{' '.join(argv[:2])} … failed (exit {done.returncode}):\n"
                         f"{done.stderr.strip() or done.stdout.strip()}")


def fetch(versions: list[str]) -> None:
    wanted = [v for v in versions if not is_fetched(v)]
    if not wanted:
        return
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} is not installed; the releases are fetched as Debian packages")
    if not KEYRING.is_file():
        raise FetchError(f"{KEYRING} is missing (Debian package debian-archive-keyring)")
    mirror = debian_mirror()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-", dir=CACHE) as tmp:
        work = pathlib.Path(tmp)
        for sub in ("lists/partial", "archives/partial", "cache"):
            (work / sub).mkdir(parents=True)
        suites = sorted({FETCHED_RELEASES[v][0] for v in wanted})
        (work / "sources.list").write_text("".join(
            f"deb [signed-by={KEYRING}] {mirror} {suite} main\n" for suite in suites))
        options = ["-o", f"Dir::Etc::sourcelist={work / 'sources.list'}",
                   "-o", "Dir::Etc::sourceparts=-",
                   "-o", f"Dir::State::Lists={work / 'lists'}",
                   "-o", f"Dir::Cache={work / 'cache'}",
                   "-o", f"Dir::Cache::archives={work / 'archives'}",
                   "-o", "APT::Get::List-Cleanup=0",
                   "-o", "APT::Sandbox::User=root", "-q"]
        _run(["apt-get", *options, "update"])
        _run(["apt-get", *options, "download",
              *(f"containerd={FETCHED_RELEASES[v][1]}" for v in wanted)], cwd=work)
        for version in wanted:
            debs = list(work.glob(f"containerd_{FETCHED_RELEASES[version][1].replace(':', '%3a')}_*.deb"))
            if len(debs) != 1:
                raise FetchError(f"apt-get download left {len(debs)} packages for containerd {version}")
            target = CACHE / version
            staging = CACHE / f".{version}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            _run(["dpkg", "-x", str(debs[0]), str(staging)])
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)       # a half-unpacked release is never taken for a whole one
            if not is_fetched(version):
                raise FetchError(f"containerd {version}'s package has no containerd, ctr and shim in usr/bin")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when a release is missing")
    parser.add_argument("versions", nargs="*", default=sorted(FETCHED_RELEASES), metavar="VERSION",
                        help=f"releases to fetch (default: {' '.join(sorted(FETCHED_RELEASES))})")
    args = parser.parse_args(argv)
    unknown = [v for v in args.versions if v not in FETCHED_RELEASES]
    if unknown:
        parser.error(f"unknown release {', '.join(unknown)}; known: {', '.join(sorted(FETCHED_RELEASES))}")
    if not args.check:
        try:
            fetch(args.versions)
        except FetchError as exc:
            print(f"fetch_containerd: {exc}", file=sys.stderr)
            return 1
    missing = [v for v in args.versions if not is_fetched(v)]
    for version in args.versions:
        print(f"containerd {version}: {bin_dir(version) if version not in missing else 'missing'}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
