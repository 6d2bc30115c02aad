"""Atomic file writes (a reader, or a rerun after a kill, sees the old file or the new one, never
a torn one) and exclusive locks (two processes never write the same run)."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hwsim.errors import AxlabError


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename; creates the parent folder.

    The temporary name carries the process id, so concurrent writers of the same path (e.g. DSE
    workers building the same LUT) never write into each other's file: the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
    return path


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created empty if missing, never truncated).

    Raises at once, naming ``what``, when another process holds it; the lock goes with the
    process, so a killed run leaves nothing to clean up."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "ab")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AxlabError(f"{what} is being written by another process (lock on {path}); "
                             "wait for it to finish or choose another output") from None
        yield
    finally:
        fh.close()          # closing the descriptor releases the lock
