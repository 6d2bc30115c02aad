"""SQLite store of design evaluations: no design is evaluated twice, a killed run loses nothing.

A row's key is sha256 of the evaluation context (model hash, LUT hashes of the multiplier set,
data subset, attack and its parameters, seed) and the design's genes. Each evaluation is
committed the moment it finishes; the ``log`` table records every computation so a run can
prove it never computed the same key twice.

Resume identity: the key is the content, so a store shared by searches with different models,
data, multiplier sets, objectives or seeds never returns one search's result to another (their
contexts differ); searches of one context that differ only in how they search (population,
generations, constraint) share rows on purpose, and a DSE folder lists only the designs its own
search visited. The identity of the folder itself is :mod:`flows.dse_identity`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (key TEXT PRIMARY KEY, context TEXT NOT NULL, genes TEXT NOT NULL,
                                  result TEXT NOT NULL, seconds REAL, created TEXT);
CREATE TABLE IF NOT EXISTS log (key TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL);
"""


def context_key(context: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()


def eval_key(ctx_key: str, genes: list[int] | tuple[int, ...]) -> str:
    return hashlib.sha256(f"{ctx_key}:{','.join(map(str, genes))}".encode()).hexdigest()


class EvalStore:
    """Evaluations keyed by (context, genes). Safe for one writer; readers may be many."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT key, context, genes, result, seconds, created FROM evals LIMIT 1").fetchall()
            self.db.execute("SELECT key, event, at FROM log LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:    # another file, a damaged database or another schema
            raise AxlabError(f"{self.path}: not a usable axlab evaluation store ({exc}); give another --store or "
                             "delete it") from None

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT result FROM evals WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, ctx_key: str, genes: list[int], result: dict[str, Any], seconds: float) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self.db:  # one transaction: the row and its log entry land together or not at all
            self.db.execute("INSERT OR IGNORE INTO evals VALUES (?, ?, ?, ?, ?, ?)",
                            (key, ctx_key, json.dumps(list(map(int, genes))), json.dumps(result), seconds, now))
            self.db.execute("INSERT INTO log VALUES (?, 'computed', ?)", (key, now))

    def rows(self, ctx_key: str) -> list[tuple[list[int], dict[str, Any]]]:
        cur = self.db.execute("SELECT genes, result FROM evals WHERE context = ? ORDER BY rowid", (ctx_key,))
        return [(json.loads(g), json.loads(r)) for g, r in cur]

    def computations(self, ctx_key: str | None = None) -> dict[str, int]:
        """How many times each key was computed (all 1 when nothing was evaluated twice)."""
        q = "SELECT log.key, COUNT(*) FROM log"
        args: tuple = ()
        if ctx_key is not None:
            q += " JOIN evals ON evals.key = log.key WHERE evals.context = ?"
            args = (ctx_key,)
        return dict(self.db.execute(q + " GROUP BY log.key", args).fetchall())

    def close(self) -> None:
        self.db.close()
