"""Argument types shared by every ``axlab`` command, and the parser that reports one line.

Each helper is an argparse ``type=`` callable: it converts the text and checks the allowed
range at parse time, before any handler runs, so a bad option never loads a model, trains,
or leaves a half-written output behind. A refused value ends the command with one line

    axlab: dse: --pop: must be an integer >= 2 (got '0')

on stderr and exit status 2 (the same status as an :class:`hwsim.errors.AxlabError`).
This module is pure Python (no numpy/torch) so ``axlab --help`` stays fast.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable, NoReturn

SEED_MAX = 2**32 - 1  # numpy's legacy seeding and many tools take 32-bit seeds


class AxlabArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ``axlab: <command>: <problem>`` (exit 2).

    Sub-command parsers inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def error(self, message: str) -> NoReturn:
        cmd = " ".join(self.prog.split()[1:])  # "axlab dse" -> "dse"
        message = message.replace("argument ", "", 1) if message.startswith("argument ") else message
        message = " ".join(message.split())  # one line, whatever argparse wrapped
        where = f"{cmd}: " if cmd else ""
        hint = f" (see axlab {cmd + ' ' if cmd else ''}--help)"
        self.exit(2, f"axlab: {where}{message}{hint}\n")


def _fail(what: str, text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"must be {what} (got {text!r})")


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (either bound optional)."""
    if lo is not None and hi is not None:
        what = f"an integer in [{lo}, {hi}]"
    elif lo is not None:
        what = f"an integer >= {lo}"
    elif hi is not None:
        what = f"an integer <= {hi}"
    else:
        what = "an integer"

    def parse(text: str) -> int:
        try:
            v = int(str(text).strip(), 10)
        except ValueError:
            _fail(what, text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            _fail(what, text)
        return v

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
seed_int = int_range(0, SEED_MAX)


def finite_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """A finite float (no nan/inf) in [lo, hi]; ``lo_open``: lo itself is not allowed."""
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    what = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            _fail(what, text)
        if not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) \
                or (hi is not None and v > hi):
            _fail(what, text)
        return v

    parse.__name__ = "number"
    return parse


def _blocking_ancestor(p: Path) -> Path | None:
    """The nearest existing ancestor of ``p`` that is not a folder (writing under it fails)."""
    for parent in p.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def out_file(text: str) -> str:
    """A file to write: not an existing folder, and not under an existing non-folder."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must be a file path (got an empty string)")
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file path")
    if p.exists() and not p.is_file():      # a FIFO or device: writing blocks or goes nowhere
        raise argparse.ArgumentTypeError(f"{text} is not a regular file (a device, FIFO or socket); "
                                         "expected a file path")
    blocker = _blocking_ancestor(p)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {blocker} is a file, not a folder")
    return text


def out_dir(text: str) -> str:
    """A folder to write into: not an existing file, and not under an existing non-folder."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must be a folder path (got an empty string)")
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder")
    blocker = _blocking_ancestor(p)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"cannot create {text}: {blocker} is a file, not a folder")
    return text


def in_file(text: str) -> str:
    """An existing, readable file."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def in_dir(text: str) -> str:
    """An existing folder."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder" if not p.exists()
                                         else f"{text} is a file; expected a folder")
    return text


def nonempty_str(text: str) -> str:
    """Any text that is not empty or blank."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text



_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def safe_name(text: str) -> str:
    """A name that becomes part of a path or URL: letters, digits, ``._+-``, no leading dot."""
    if not _NAME.match(str(text)):
        raise argparse.ArgumentTypeError(f"must be a name of letters, digits and ._+- not starting with "
                                         f"a dot (got {text!r})")
    return text
