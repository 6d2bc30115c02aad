"""Resumable training: a run stopped after any epoch and resumed ends with exactly the weights of
an uninterrupted run; mismatched settings and damaged checkpoints are refused in one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError
from nn.checkpoint import read_checkpoint
from nn.train import StopTraining, train
from tests.test_nn_folder_data import make_folder

ROOT = Path(__file__).resolve().parents[1]
# 2 float + 2 QAT epochs of ResNet8 on 3 x 16 random 16x16 images: a few seconds per run
KW = dict(epochs=4, qat=True, qat_epochs=2, seed=3, threads=1, recipe="cifar", batch=8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    mp = pytest.MonkeyPatch()
    mp.setenv("AXLAB_CACHE", str(root / "cache"))
    make_folder(root / "d", {"a": 16, "b": 16, "c": 16}, n_test=3, size=16, seed=1)
    yield f"folder:{root / 'd'}"
    mp.undo()


@pytest.fixture(scope="module")
def reference(folder):
    return train("resnet8", folder, **KW)


def _same_weights(a, b) -> None:
    """Every float, QAT and integer array of two bundles, bit for bit, and the file bytes."""
    assert a.graph.params.keys() == b.graph.params.keys()
    for k in a.graph.params:
        assert np.array_equal(a.graph.params[k], b.graph.params[k]), k
        assert np.array_equal(a.qat_params[k], b.qat_params[k]), k
    for k in a.qparams.wq:
        assert np.array_equal(a.qparams.wq[k], b.qparams.wq[k]) and np.array_equal(a.qparams.bq[k], b.qparams.bq[k])
    assert a.qparams.act == b.qparams.act
    assert a.to_bytes() == b.to_bytes()


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # inside float, at the float/QAT boundary, inside QAT
def test_stopped_and_resumed_run_equals_uninterrupted(folder, reference, tmp_path, stop_after):
    ckpt = tmp_path / "run.ckpt"

    def stop(state):  # noqa: ANN001, ANN202
        if len(state.history) == stop_after:
            raise StopTraining

    with pytest.raises(StopTraining):
        train("resnet8", folder, checkpoint=ckpt, on_epoch=stop, **KW)
    st = read_checkpoint(ckpt)
    assert (st.phase, st.epoch) == (("float", stop_after) if stop_after <= 2 else ("qat", stop_after - 2))
    resumed = train("resnet8", folder, checkpoint=ckpt, resume=True, **KW)
    _same_weights(resumed, reference)
    assert ckpt.stat().st_size < 5 * 2**20


def test_default_recipe_resumes_exactly_too(folder, tmp_path):
    kw = dict(epochs=3, qat=True, qat_epochs=1, seed=0, threads=1)
    ref = train("minnet", folder, **kw)
    ckpt = tmp_path / "m.ckpt"

    def stop(state):  # noqa: ANN001, ANN202
        if len(state.history) == 1:
            raise StopTraining

    with pytest.raises(StopTraining):
        train("minnet", folder, checkpoint=ckpt, on_epoch=stop, **kw)
    _same_weights(train("minnet", folder, checkpoint=ckpt, resume=True, **kw), ref)


@pytest.mark.parametrize("change, key", [(dict(lr=0.01), "lr"), (dict(epochs=5), "epochs"), (dict(seed=4), "seed"),
                                         (dict(batch=16), "batch"), (dict(qat=False), "qat"),
                                         (dict(recipe="default", lr=0.05, batch=8), "recipe")])
def test_resume_with_other_settings_is_refused_naming_the_key(folder, tmp_path, change, key):
    ckpt = tmp_path / "run.ckpt"

    def stop(state):  # noqa: ANN001, ANN202
        raise StopTraining

    with pytest.raises(StopTraining):
        train("resnet8", folder, checkpoint=ckpt, on_epoch=stop, **KW)
    with pytest.raises(AxlabError, match=f"written with {key}=") as exc:
        train("resnet8", folder, checkpoint=ckpt, resume=True, **{**KW, **change})
    assert "\n" not in str(exc.value)
    with pytest.raises(AxlabError, match="written with arch="):
        train("minnet", folder, checkpoint=ckpt, resume=True, **KW)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_damaged_checkpoint_is_refused_in_one_line(folder, tmp_path, damage):
    ckpt = tmp_path / "run.ckpt"

    def stop(state):  # noqa: ANN001, ANN202
        raise StopTraining

    with pytest.raises(StopTraining):
        train("resnet8", folder, checkpoint=ckpt, on_epoch=stop, **KW)
    data = ckpt.read_bytes()
    if damage == "truncate":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        ckpt.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif damage == "foreign":
        ckpt.write_bytes(b"PK\x03\x04 a zip, say")
    else:
        ckpt.write_bytes(b"")
    with pytest.raises(AxlabError, match="corrupt checkpoint|not an axlab training checkpoint") as exc:
        train("resnet8", folder, checkpoint=ckpt, resume=True, **KW)
    assert "\n" not in str(exc.value)


def test_cli_refuses_to_overwrite_a_checkpoint_and_resume_without_one(folder, tmp_path, capsys):
    from flows.cli import main

    ckpt = tmp_path / "c.ckpt"
    ckpt.write_bytes(b"x")
    base = ["train", "--arch", "resnet8", "--dataset", folder, "--epochs", "1", "--out", str(tmp_path / "m.axm")]
    assert main(base + ["--checkpoint", str(ckpt)]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(base + ["--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert main(base + ["--resume", "--checkpoint", str(tmp_path / "none.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m.axm").exists()


def _cli(folder: str, tmp_path: Path, out: str, ckpt: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows", "train", "--arch", "resnet8", "--dataset", folder, "--epochs", "6",
            "--qat", "--qat-epochs", "2", "--recipe", "cifar", "--batch", "8", "--seed", "5", "--threads", "1",
            "--checkpoint", str(tmp_path / ckpt), "--out", str(tmp_path / out), *extra]


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_to_the_same_model_file(folder, tmp_path):
    """A real SIGKILL of ``axlab train`` (mid-epoch, after >= 1 checkpoint), then ``--resume``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cli(folder, tmp_path, "ref.axm", "ref.ckpt"), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    p = subprocess.Popen(_cli(folder, tmp_path, "run.axm", "run.ckpt"), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (tmp_path / "run.ckpt").exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL and not (tmp_path / "run.axm").exists()
    done = read_checkpoint(tmp_path / "run.ckpt")
    assert len(done.history) < 6
    r = subprocess.run(_cli(folder, tmp_path, "run.axm", "run.ckpt", "--resume"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run.axm").read_bytes() == (tmp_path / "ref.axm").read_bytes()


def test_qat_lr_may_change_while_the_checkpoint_is_in_its_float_phase(folder, reference, tmp_path):
    """--qat-lr only drives QAT: a float-phase checkpoint resumed with another value ends with the
    weights of an uninterrupted run with that value (and not the default's); inside QAT it is
    refused; a checkpoint written before the setting existed counts as a tenth of lr."""
    from nn.checkpoint import save_checkpoint

    other = train("resnet8", folder, qat_lr=0.0123, **KW)
    assert other.to_bytes() != reference.to_bytes()
    ckpt = tmp_path / "run.ckpt"

    def stop_at(n):  # noqa: ANN001, ANN202
        def stop(state):  # noqa: ANN001, ANN202
            if len(state.history) == n:
                raise StopTraining
        return stop

    with pytest.raises(StopTraining):
        train("resnet8", folder, checkpoint=ckpt, on_epoch=stop_at(2), **KW)   # float phase done
    st = read_checkpoint(ckpt)
    st.config.pop("qat_lr")                      # as written before qat_lr was a setting
    save_checkpoint(ckpt, st)
    _same_weights(train("resnet8", folder, checkpoint=ckpt, resume=True, qat_lr=0.0123, **KW), other)

    ckpt2 = tmp_path / "run2.ckpt"
    with pytest.raises(StopTraining):
        train("resnet8", folder, checkpoint=ckpt2, on_epoch=stop_at(3), **KW)  # inside QAT
    with pytest.raises(AxlabError, match="qat_lr"):
        train("resnet8", folder, checkpoint=ckpt2, resume=True, qat_lr=0.0123, **KW)
    old = read_checkpoint(ckpt2)
    old.config.pop("qat_lr")
    save_checkpoint(ckpt2, old)
    _same_weights(train("resnet8", folder, checkpoint=ckpt2, resume=True, **KW), reference)


def test_a_diverging_training_stops_with_one_line_naming_the_remedy(folder, capsys):
    """A QAT learning rate far too high: the first non-finite activation range (or loss) stops the
    run with an AxlabError instead of a NaN traceback deep in the quantiser."""
    with pytest.raises(AxlabError, match="training diverged; lower the learning rate"):
        train("resnet8", folder, qat_lr=1000.0, **KW)
    from flows.cli import main

    assert main(["train", "--arch", "resnet8", "--dataset", folder, "--epochs", "1", "--qat-lr", "0.01",
                 "--out", "never.axm"]) == 2
    assert "--qat-lr 0.01: needs --qat" in capsys.readouterr().err
