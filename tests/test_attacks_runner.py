"""Per-image JSONL results, resume (including after SIGKILL), transfer and detection outputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from attacks_fixtures import ShimImpl, trained_tiny  # noqa: E402

from attacks.detect import TRANSFORMS, evaluate, kl_max, write_report  # noqa: E402
from attacks.implspec import Ensemble  # noqa: E402
from attacks.registry import make_attack  # noqa: E402
from attacks.runner import load_run, run_attack, run_paths, select_evasion_set, summarize  # noqa: E402
from attacks.transfer import transfer_rates, write_transfer  # noqa: E402
from hwsim.errors import AxlabError  # noqa: E402

KEYS = {"index", "label", "success", "queries", "l0", "l2", "linf", "psnr", "ssim", "adv_label"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_tiny()
    impl = ShimImpl(model)
    return impl, x, y, select_evasion_set([impl], x, y, 6)


def _lines(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_jsonl_records_and_images(setup, tmp_path):
    impl, x, y, idx = setup
    out = tmp_path / "r.jsonl"
    recs = run_attack(make_attack("pgd", {"eps": 32 / 255, "steps": 5}), impl, x, y, idx, out,
                      seed=3)
    lines = _lines(out)
    assert [r["index"] for r in lines] == idx.tolist() and lines == recs
    for r in lines:
        assert KEYS <= set(r)
        assert 0 <= r["linf"] <= 32 / 255 + 1e-9 and r["l2"] >= r["linf"]
        assert r["success"] == (r["adv_label"] != r["label"])
    run = load_run(out)
    assert run.adv.dtype == np.uint8 and np.array_equal(run.clean, x[idx])
    assert np.array_equal(np.load(run_paths(out)["npz"])["adv"], run.adv)
    pred = impl.predict_proba(run.adv).argmax(1)
    assert pred.tolist() == [r["adv_label"] for r in lines]
    s = summarize(recs)
    assert s["n"] == 6 and s["success_rate"] == sum(r["success"] for r in recs) / 6


def test_resume_skips_finished_and_refuses_other_config(setup, tmp_path):
    impl, x, y, idx = setup
    out = tmp_path / "r.jsonl"
    atk = make_attack("square", {"n_queries": 20})
    full = run_attack(atk, impl, x, y, idx, tmp_path / "full.jsonl", seed=1)
    run_attack(atk, impl, x, y, idx, out, seed=1)
    # as if killed after 2 images (the image selection, n included, is part of the run's identity)
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))
    calls = []
    orig = impl.predict_proba

    class Counting:
        name = impl.name

        def predict_proba(self, xx):
            calls.append(len(xx))
            return orig(xx)

        surrogate = impl.surrogate

    recs = run_attack(atk, Counting(), x, y, idx, out, seed=1)
    assert [r["index"] for r in recs] == idx.tolist()
    assert recs == full                        # resumed run == uninterrupted run
    before = len(calls)
    run_attack(atk, Counting(), x, y, idx, out, seed=1)
    assert len(calls) - before == 0 or sum(calls[before:]) == 0
    with pytest.raises(AxlabError, match="was made with seed=1, this run asks for seed=2"):
        run_attack(atk, impl, x, y, idx, out, seed=2)
    with pytest.raises(AxlabError, match="was made with attack=square, this run asks for attack=fgsm"):
        run_attack(make_attack("fgsm"), impl, x, y, idx, out, seed=1)


def _slow_run_in_subprocess(out: Path, n: int, seed: int, lines: int) -> subprocess.Popen:
    """Start a slowed-down attack run (tests/attacks_fixtures.py) in a real process; return once
    it has written ``lines`` records (or ended)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "attacks_fixtures.py"), str(out),
                             str(n), str(seed), "0.03"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.01)
    return proc


def test_torn_last_line_is_dropped(setup, tmp_path):
    impl, x, y, idx = setup
    out = tmp_path / "r.jsonl"
    atk = make_attack("fgsm")
    run_attack(atk, impl, x, y, idx, out)
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))
    with open(out, "ab") as fh:
        fh.write(b'{"index": 99, "lab')                 # killed mid-write
    recs = run_attack(atk, impl, x, y, idx, out)
    assert [r["index"] for r in recs] == idx.tolist()


def test_resume_after_sigkill(tmp_path):
    """A real subprocess killed with SIGKILL mid-run; the rerun completes without duplicates
    and gives exactly the records of an uninterrupted run."""
    out = tmp_path / "killed.jsonl"
    n, seed = 8, 5
    proc = _slow_run_in_subprocess(out, n, seed, lines=2)
    try:
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = out.read_bytes().count(b"\n")
    assert 2 <= partial < n
    from attacks_fixtures import _main
    _main([str(out), str(n), str(seed), "0"])
    _main([str(tmp_path / "ref.jsonl"), str(n), str(seed), "0"])
    got, ref = _lines(out), _lines(tmp_path / "ref.jsonl")
    assert len({r["index"] for r in got}) == len(got) == n
    assert sorted(got, key=lambda r: r["index"]) == sorted(ref, key=lambda r: r["index"])
    assert np.array_equal(load_run(out).adv[np.argsort([r["index"] for r in got])],
                          load_run(tmp_path / "ref.jsonl").adv[np.argsort([r["index"] for r in ref])])



def test_second_writer_is_refused_and_a_kill_frees_the_run(tmp_path):
    """Two processes on one output would interleave duplicate records: the second is refused
    while the first runs; once the first is killed the run resumes without duplicates."""
    out = tmp_path / "busy.jsonl"
    n, seed = 8, 5
    proc = _slow_run_in_subprocess(out, n, seed, lines=1)
    try:
        assert proc.poll() is None, "the run finished before the second writer started"
        from attacks_fixtures import _main
        with pytest.raises(AxlabError, match="being written by another process"):
            _main([str(out), str(n), str(seed), "0"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _main([str(out), str(n), str(seed), "0"])
    got = _lines(out)
    assert len({r["index"] for r in got}) == len(got) == n

def test_transfer_matrix_and_ensemble(setup, tmp_path):
    impl, x, y, idx = setup
    q = ShimImpl(impl.model, "q", levels=16)
    r1 = tmp_path / "fp.jsonl"
    run_attack(make_attack("pgd", {"eps": 48 / 255, "steps": 10, "alpha": 4 / 255}), impl, x, y,
               idx, r1, meta={"source": "fp"})
    ens = Ensemble([impl, q])
    r2 = tmp_path / "ens.jsonl"
    run_attack(make_attack("pgd", {"eps": 48 / 255, "steps": 10, "alpha": 4 / 255}), ens, x, y,
               idx, r2, meta={"source": ens.name})
    rows = transfer_rates([load_run(r1), load_run(r2)], [("fp", impl), ("q", q)])
    assert len(rows) == 4
    own = next(r for r in rows if r["source"] == "pgd@fp" and r["target"] == "fp")
    assert own["rate"] == 1.0 and own["valid"] == sum(r["success"] for r in _lines(r1))
    paths = write_transfer(rows, tmp_path / "t")
    assert paths["png"].stat().st_size > 1000
    text = paths["matrix"].read_text().splitlines()
    assert text[0].split(",")[1:] == ["fp", "q"] and len(text) == 3
    # runs of two networks with the same implementation name stay apart (thesis Table 4.7)
    r3 = tmp_path / "other.jsonl"
    run_attack(make_attack("pgd", {"eps": 48 / 255, "steps": 10, "alpha": 4 / 255}), impl, x, y,
               idx, r3, meta={"source": "fp", "model": "nets/resnet8.axm"})
    labels = {r["source"] for r in transfer_rates([load_run(r1), load_run(r3)], [("fp", impl)])}
    assert labels == {"pgd@fp", "pgd@resnet8:fp"}


def test_transforms_and_kl():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    for name, t in TRANSFORMS.items():
        z = t(x)
        assert z.dtype == np.uint8 and z.shape == x.shape, name
        assert not np.array_equal(z, x), name
    assert np.array_equal(TRANSFORMS["hflip"](x), x[..., ::-1])
    assert np.array_equal(TRANSFORMS["translate"](x)[:, :, 2:, 2:], x[:, :, :-2, :-2])
    p = np.array([[0.7, 0.2, 0.1]])
    q = np.array([[0.1, 0.2, 0.7]])
    d = (0.7 * np.log(7) + 0.1 * np.log(1 / 7))
    assert kl_max(p, q)[0] == pytest.approx(d) and kl_max(q, p)[0] == pytest.approx(d)
    assert kl_max(p, p)[0] == pytest.approx(0.0)


def test_detection_report(setup, tmp_path):
    impl, x, y, idx = setup
    more = select_evasion_set([impl], x, y, 30)
    out = tmp_path / "r.jsonl"
    run_attack(make_attack("deepfool", {"steps": 20}), impl, x, y, more, out)
    run = load_run(out)
    q = ShimImpl(impl.model, "q", levels=16)
    res = evaluate([("fp", impl), ("q", q)], run.clean, run.adv[run.success])
    assert len(res["rows"]) == 2 * len(TRANSFORMS)
    assert {v["impl"] for v in res["votes"]} == {"fp", "q", "majority(all)"}
    for r in res["rows"]:
        assert 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_5fpr"] <= 1
    # DeepFool examples sit on the boundary: the transforms separate them well on average
    assert np.mean([r["auc"] for r in res["rows"]]) > 0.6
    paths = write_report(res, tmp_path / "d")
    assert paths["png"].stat().st_size > 1000
    assert paths["csv"].read_text().startswith("impl,transform,auc,tpr_at_5fpr")
