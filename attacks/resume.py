"""Resume identity: a resumable output records what defines it, and a rerun must ask for the same.

Every resumable output of axlab (an attack run ``RUN.jsonl``, a DSE folder, a flow folder)
writes an *identity*: a JSON mapping of everything its results depend on. A rerun into the same
output computes its own identity and :func:`check_identity` compares the two before any work is
done; the first differing key (dotted for nested values, ``luts[2]`` for list items) is named
with both values in one line, e.g.::

    r.jsonl was made with dataset=digits, this run asks for dataset=cifar10:/data; use another
    --out or delete it

Values are compared as canonical JSON, so tuples and lists, or numpy and Python integers, are
the same value; a key the recorded identity lacks (an output of an older axlab) reads as
``(not recorded)`` and is a mismatch too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from hwsim.errors import AxlabError

NOT_RECORDED = "(not recorded)"
HINT = "use another --out or delete it"


def canonical(value: Any) -> Any:
    """``value`` as JSON would store it (tuples -> lists, numpy scalars -> Python numbers)."""
    return json.loads(json.dumps(value, sort_keys=True, default=_default))


def _default(v: Any) -> Any:
    try:
        import numpy as np
    except ImportError:                                  # pragma: no cover
        raise TypeError(f"not JSON serialisable: {type(v).__name__}") from None
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def sha256_json(value: Any) -> str:
    """sha256 hex of the canonical JSON text of ``value``."""
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True).encode()).hexdigest()


def _diffs(old: Any, new: Any, key: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            yield from _diffs(old.get(k, NOT_RECORDED), new.get(k, NOT_RECORDED), f"{key}.{k}" if key else str(k))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from _diffs(a, b, f"{key}[{i}]")
    elif old != new:
        yield key, old, new


def first_difference(recorded: dict[str, Any], wanted: dict[str, Any],
                     keys: tuple[str, ...] | list[str]) -> tuple[str, Any, Any] | None:
    """The first of ``keys`` (in that order, descending into nested values) whose canonical
    values differ, as (dotted key, recorded value, wanted value); None when all agree."""
    for k in keys:
        old = canonical(recorded[k]) if k in recorded else NOT_RECORDED
        new = canonical(wanted.get(k))
        for diff in _diffs(old, new, k):
            return diff
    return None


def show(value: Any, width: int = 60) -> str:
    """A short one-line rendering: strings bare, 64-hex digests cut to 12 characters."""
    if isinstance(value, str):
        text = value[:12] + "..." if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else value
    else:
        text = json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def check_identity(where: str | Path, recorded: dict[str, Any], wanted: dict[str, Any],
                   keys: tuple[str, ...] | list[str], hint: str = HINT) -> None:
    """Raise :class:`AxlabError` naming the first differing key of ``keys`` and both values."""
    diff = first_difference(recorded, wanted, keys)
    if diff is not None:
        key, old, new = diff
        raise AxlabError(f"{where} was made with {key}={show(old)}, this run asks for {key}={show(new)}; {hint}")


def read_identity(path: Path, what: str) -> dict[str, Any]:
    """The JSON mapping in ``path``; a damaged file is an error naming it (never overwritten)."""
    if Path(path).exists() and not Path(path).is_file():     # a FIFO or device would block or never end
        raise AxlabError(f"{path}: the {what} is not a regular file; the output cannot be resumed safely: {HINT}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AxlabError(f"{path}: cannot read the {what} ({exc.__class__.__name__}); the output cannot be "
                         f"resumed safely: {HINT}") from None
    if not isinstance(data, dict):
        raise AxlabError(f"{path}: the {what} is not a JSON mapping; the output cannot be resumed safely: {HINT}")
    return data
