"""Atomic file writes (a reader, or a rerun after a kill, sees the old file or the new one, never
a torn one) and exclusive locks (two processes never write the same run)."""
from __future__ import annotations

import fcntl
import os
import stat
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


def _missing_folders(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first."""
    out = []
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            break
        out.append(parent)
    return out


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:          # deepest first; stops at the first that is not empty
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created empty if missing, never truncated).

    Raises at once, naming ``what``, when another process holds it; the lock goes with the
    process, so a killed run leaves nothing to clean up. ``path`` must be a regular file (a
    FIFO or device is refused, never opened for a blocking write).

    Leaves nothing behind that it made and nobody filled: if ``path`` did not exist and is
    still empty when the block ends (normally or by an exception, e.g. a new run refused after
    taking the lock), it is removed, together with the folders this call created if they are
    empty. The removal happens under the lock, and a locker checks that the file it locked is
    still the one at ``path`` (else it retries), so a removed lock file never lets two
    processes in."""
    path = Path(path)
    made = _missing_folders(path)
    try:
        if path.exists() and not path.is_file():
            raise AxlabError(f"{path} is not a regular file (a folder, device, FIFO or socket); "
                             "choose a file path for the output")
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            created = True
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK, 0o666)
            except FileExistsError:
                created = False
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise AxlabError(f"{path} is not a regular file (a device, FIFO or socket); "
                                 "choose a file path for the output")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AxlabError(f"{what} is being written by another process (lock on {path}); "
                                 "wait for it to finish or choose another output") from None
            try:        # the file may have been removed by its last holder between open and lock
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
    except OSError as exc:
        _remove_empty(made)
        raise AxlabError(f"cannot write {path}: {exc.strerror or exc}") from None
    except AxlabError:
        _remove_empty(made)
        raise
    try:
        yield
    finally:
        try:
            if created and os.fstat(fd).st_size == 0:
                path.unlink(missing_ok=True)
                _remove_empty(made)
        finally:
            os.close(fd)        # closing the descriptor releases the lock
