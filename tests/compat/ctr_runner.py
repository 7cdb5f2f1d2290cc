"""Run the unmodified `ctr` client against a socket and capture what it says."""

from __future__ import annotations

import dataclasses
import subprocess


@dataclasses.dataclass
class CtrResult:
    argv: list
    rc: int
    stdout: str
    stderr: str

    def ok(self) -> "CtrResult":
        """Return self, or fail with the whole exchange when ctr exited non-zero."""
        if self.rc != 0:
            raise AssertionError(f"{' '.join(self.argv)} exited {self.rc}\n"
                                 f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}")
        return self


class Ctr:
    """`ctr --address SOCK -n NS ...` with a timeout (a hung client is a failure, not a hang)."""

    def __init__(self, ctr: str, address: str, namespace: str = "default", timeout: float = 30.0) -> None:
        self.ctr = ctr
        self.address = address
        self.namespace = namespace
        self.timeout = timeout

    def __call__(self, *args: str, namespace: str | None = None, timeout: float | None = None,
                 stdin: bytes | None = None) -> CtrResult:
        argv = [self.ctr, "--address", self.address, "-n", namespace or self.namespace, *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            return CtrResult(argv, -9, (exc.stdout or b"").decode(errors="replace"),
                             (exc.stderr or b"").decode(errors="replace") + "\n(timed out)")
        return CtrResult(argv, done.returncode, done.stdout.decode(errors="replace"),
                         done.stderr.decode(errors="replace"))


def table_rows(stdout: str) -> list[list[str]]:
    """Split ctr's tabwriter output into rows of whitespace-separated cells (header dropped)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [line.split() for line in lines[1:]]
