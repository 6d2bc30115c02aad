"""CLI: axlab attack / transfer / detect on a tiny MinNet trained on digits (nn.api)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("nn.api")

from flows.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from nn.bundle import save_model
    from nn.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cli")
    path = d / "m.pt"
    save_model(train("minnet", "digits", epochs=2, qat=True, seed=0), path)
    yield d, path
    torch.set_num_threads(threads)


def test_attack_transfer_detect(model, capsys):
    d, m = model
    run = d / "pgd.jsonl"
    rc = main(["attack", "--model", str(m), "--impl", "fp", "--attack", "pgd", "--param",
               "eps=64/255", "steps=16", "alpha=4/255", "--n", "12", "--seed", "1", "--out",
               str(run), "--no-progress", "--json"])
    assert rc == 0
    summ = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summ["n"] == 12 and summ["success_rate"] > 0.5
    lines = run.read_text().splitlines()
    assert len(lines) == 12 and {"index", "psnr", "ssim", "adv_label"} <= set(json.loads(lines[0]))
    # rerun resumes: nothing new
    assert main(["attack", "--model", str(m), "--impl", "fp", "--attack", "pgd", "--param",
                 "eps=64/255", "steps=16", "alpha=4/255", "--n", "12", "--seed", "1", "--out",
                 str(run), "--no-progress"]) == 0
    assert run.read_text().splitlines() == lines
    qrun = d / "pgd_q.jsonl"
    assert main(["attack", "--model", str(m), "--impl", "q", "--attack", "pgd", "--param",
                 "eps=64/255", "steps=16", "alpha=4/255", "--n", "12", "--out", str(qrun),
                 "--no-progress"]) == 0
    assert "success rate" in capsys.readouterr().out
    assert main(["transfer", str(run), str(qrun), "--to", f"{m}:fp", f"{m}:q",
                 f"{m}:ax:mul8s_bi_tr3", "--out", str(d / "tr"), "--no-progress"]) == 0
    assert (d / "tr" / "transfer.png").exists()
    assert len((d / "tr" / "transfer_matrix.csv").read_text().splitlines()) == 3
    assert main(["detect", "--model", str(m), "--impl", "fp", "q", "--adv", str(run), "--out",
                 str(d / "det"), "--no-progress"]) == 0
    assert "majority vote" in capsys.readouterr().out
    assert (d / "det" / "boxplot.png").exists() and (d / "det" / "detection.csv").exists()


def test_bad_input_one_line_errors(model, capsys):
    d, m = model
    base = ["attack", "--model", str(m), "--out", str(d / "x.jsonl"), "--no-progress"]
    for extra, msg in ((["--attack", "nope"], "unknown attack 'nope'"),
                       (["--attack", "pgd", "--param", "bogus=1"], "unknown parameter 'bogus'"),
                       (["--attack", "pgd", "--param", "eps=3"], "allowed: 0 < eps <= 1"),
                       (["--attack", "pgd", "--impl", "ax"], "--impl ax needs --design"),
                       (["--attack", "fgsm", "--n", "0"], "--n: must be an integer >= 1")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("axlab: ") and msg in err and len(err.splitlines()) == 1
    assert main(["transfer", str(d / "none.jsonl"), "--to", f"{m}:fp", "--out", str(d)]) == 2
    assert "no such run file" in capsys.readouterr().err
    assert main(["transfer", str(d / "none.jsonl"), "--to", "m.pt:zz", "--out", str(d)]) == 2
    assert "bad implementation spec" in capsys.readouterr().err
