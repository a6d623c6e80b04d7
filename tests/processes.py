"""Multi-process tests: run a command in its own process group with a timeout, and end
every process it started (by pid) whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
       "HYDRA_FULL_ERROR": "0"}
for _name in [k for k in ENV if k.startswith(("SLURM_", "TORCHELASTIC_"))] + [
        "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]:
    ENV.pop(_name, None)  # a test run inside a cluster job must not join it


def command(name: str) -> str:
    return str(BIN / name)


def _stats() -> dict[int, list[str]]:
    """The /proc stat fields after the command name, by pid (Linux)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    return stats


def children(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid``."""
    parents = {p: int(f[1]) for p, f in _stats().items()}
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


def session(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid``, re-parented ones included."""
    return [p for p, f in _stats().items() if int(f[3]) == sid and f[0] != "Z"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def end(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Job:
    """``subprocess.Popen`` in a new session; :meth:`close` kills it and every process
    it started, by pid. Use as a context manager."""

    def __init__(self, args: list[str], env: dict | None = None, **kwargs) -> None:
        self.proc = subprocess.Popen(args, env=env or ENV, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, **kwargs)
        self.seen: set[int] = set()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def descendants(self) -> list[int]:
        kids = [p for p in session(self.proc.pid) if p != self.proc.pid]
        self.seen.update(kids)
        return kids

    def wait(self, timeout: float) -> tuple[int, str]:
        """Exit status and output; kills everything on timeout and fails the test."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            out, _ = self.proc.communicate()
            raise AssertionError(f"still running after {timeout} s:\n{out[-3000:]}") from None
        return self.proc.returncode, out

    def close(self) -> None:
        end([self.proc.pid, *session(self.proc.pid)])
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def run(args: list[str], timeout: float = 300, env: dict | None = None) -> tuple[int, str]:
    """Run ``args`` to its end (at most ``timeout`` seconds); every process it started is
    ended afterwards."""
    with Job(args, env) as job:
        return job.wait(timeout)


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
