"""Refused runs leave no output behind, and outputs that are not plain files are refused.

Table-driven: each case makes a new attack run fail at one point after the run file is locked
(the attack raises, the implementation raises, the lock is held by another process) or points
the output at something that is not a regular file; each must raise one line and leave the
temporary folder exactly as it was (no empty RUN.jsonl, no RUN.meta.json, no RUN.adv/, no
folder made for it). A run that already holds records keeps them (resume)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.base import Attack, AttackOutput
from attacks.runner import run_attack
from hwsim.errors import AxlabError
from hwsim.fileio import exclusive
from tests.bad_input_util import tree

ROOT = Path(__file__).resolve().parents[1]


class _Net(torch.nn.Module):
    def forward(self, x):                      # 3 classes from the mean pixel, no weights
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([m, 1 - m, 0 * m], 1)


class _Impl:
    name = "fp"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.fail:
            raise AxlabError("the implementation failed")
        with torch.no_grad():
            return torch.softmax(_Net()(torch.from_numpy(np.asarray(x)).float() / 255), 1).double().numpy()

    def surrogate(self) -> torch.nn.Module:
        return _Net()


class _Raises(Attack):
    name = "pgd"          # pgd's parameters; run() raises

    def __init__(self, exc: BaseException) -> None:
        super().__init__({})
        self.exc = exc

    def run(self, oracle, x, y, rngs) -> AttackOutput:
        raise self.exc


X = np.random.default_rng(0).integers(0, 256, (4, 1, 4, 4), dtype=np.uint8)
Y = np.zeros(4, dtype=np.int64)


def _attack_raises(tmp, out):
    run_attack(_Raises(AxlabError("attack refused its input")), _Impl(), X, Y, [0, 1], out)


def _attack_crashes(tmp, out):
    run_attack(_Raises(RuntimeError("boom")), _Impl(), X, Y, [0, 1], out)


def _impl_raises(tmp, out):
    from attacks.registry import make_attack

    run_attack(make_attack("pgd", {"steps": 1}), _Impl(fail=True), X, Y, [0, 1], out)


def _lock_held(tmp, out):
    # another process holds the lock on a run file that does not exist yet for us: its own
    # (empty) lock file must survive, and we must add nothing
    code = ("import sys, time; from hwsim.fileio import exclusive\n"
            "with exclusive(sys.argv[1], 'x'):\n print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        before = tree(tmp)
        with pytest.raises(AxlabError, match="being written by another process"):
            run_attack(_Raises(AxlabError("never reached")), _Impl(), X, Y, [0, 1], out)
        assert tree(tmp) == before
    finally:
        p.kill()
        p.wait()
    raise AxlabError("lock held (checked above)")


def _fifo(tmp, out):
    os.mkfifo(out)
    run_attack(_Raises(AxlabError("never reached")), _Impl(), X, Y, [0, 1], out)


CASES = {
    # name: (action(tmp, out), out relative to tmp, expected text, folders made before)
    "attack_refuses": (_attack_raises, "new/deeper/r.jsonl", "attack refused its input"),
    "attack_crashes": (_attack_crashes, "r.jsonl", "boom"),
    "impl_refuses": (_impl_raises, "new/r.jsonl", "the implementation failed"),
    "lock_held": (_lock_held, "r.jsonl", "lock held"),
    "fifo_out": (_fifo, "r.jsonl", "is not a regular file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_new_run_leaves_nothing(tmp_path, case):
    action, rel, expected = CASES[case]
    out = tmp_path / rel
    with pytest.raises((AxlabError, RuntimeError)) as info:
        action(tmp_path, out)
    assert expected in str(info.value) and "\n" not in str(info.value)
    # the FIFO, and the killed lock holder's own file, were there before the refused run
    left = [p for p in tree(tmp_path) if p != "r.jsonl" or case not in ("fifo_out", "lock_held")]
    assert left == [], left


def test_refused_resume_keeps_records(tmp_path):
    """A run with records that then fails keeps its file and images (resumable)."""
    from attacks.registry import make_attack

    out = tmp_path / "r.jsonl"
    run_attack(make_attack("pgd", {"steps": 1}), _Impl(), X, Y, [0], out)
    before = {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()}
    with pytest.raises(AxlabError):
        run_attack(make_attack("pgd", {"steps": 1}), _Impl(fail=True), X, Y, [0, 1], out)
    assert {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()} == before


def test_exclusive_removes_only_what_it_made(tmp_path):
    existing = tmp_path / "keep.lock"
    existing.write_bytes(b"")
    with exclusive(existing, "x"):
        pass
    with exclusive(tmp_path / "a" / "b" / "new.lock", "x"):
        assert (tmp_path / "a" / "b" / "new.lock").exists()
    assert tree(tmp_path) == ["keep.lock"]
    with exclusive(tmp_path / "c" / "data", "x"):
        (tmp_path / "c" / "data").write_text("filled\n")
    assert (tmp_path / "c" / "data").read_text() == "filled\n"


def test_exclusive_unwritable_is_one_line(tmp_path):
    with pytest.raises(AxlabError, match=r"cannot write /proc/axlab-x\.lock: "):
        with exclusive("/proc/axlab-x.lock", "x"):
            pass


@pytest.mark.parametrize("how", ["api", "cli"])
def test_export_verify_symlink_loop_is_one_line(tmp_path, how):
    from flows.export.integrity import check_export
    from tests.bad_input_util import assert_one_line_error, axlab

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    if how == "api":
        with pytest.raises(AxlabError, match="cannot be resolved"):
            check_export(loop)
    else:
        rc, out, err = axlab(["export", "verify", loop])
        assert_one_line_error(rc, err, str(loop))
    assert tree(tmp_path) == ["loop"]
