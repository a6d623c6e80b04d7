"""Atomic file writes: a failed or killed write never leaves a half-written file."""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class WriteError(OSError):
    """A file could not be written; the message names it and says whether the previous
    file was kept."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _write_error(path: Path, err: OSError, kept: bool = False) -> WriteError:
    note = "; the previous file is kept" if kept else ""
    return WriteError(err.errno, f"{path}: could not write ({err.strerror or err}){note}")


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then move it into place.

    The file gets the permissions of an ordinary ``open`` under the user's umask (a
    temporary file alone would be private). A full disk, a file-size limit or a
    read-only folder raise :class:`WriteError` naming ``path``; whatever was there before
    is left untouched and no temporary file remains.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, err, kept=path.exists()) from err
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`; serialized in memory first, since
    torch's writer turns a failed write (a full disk) into an opaque RuntimeError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def write_json(path: str | Path, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True)
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """``metrics.json``: flat keys, numbers (NaN written as null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in metrics.items()}
    return write_json(path, clean)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): parallel sweep jobs that
    need the same generated data or graph cache build it once and wait for each other."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise _write_error(path, err) from err
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that never leaves a half-written ``last.ckpt`` when a
    job is killed mid-write (the cluster's preemption, a full disk)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)
