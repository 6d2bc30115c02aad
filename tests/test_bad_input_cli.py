"""Every axlab command refuses bad option values, unreachable schedulers and bad run images
with one line ``axlab: ...`` naming the option or file and the allowed range, exit status 2,
no traceback and nothing written (the checks run before any work)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_util import assert_one_line_error, axlab, tiny_bundle, tree

ROOT = Path(__file__).resolve().parents[1]

# argv (placeholders: {model} the tiny model file, {file} an existing file, {dir} an existing
# folder, {tmp} the test folder) -> expected substring of the one error line
M = ["--model", "{model}"]
CASES = [
    # lut
    (["lut", "build", "{file}", "--jobs", "0"], "lut build: --jobs: must be an integer >= 1 (got '0')"),
    (["lut", "build", "{file}", "--sampled", "0"], "--sampled: must be an integer >= 1"),
    (["lut", "build", "{file}", "--seed", "-1"], "--seed: must be an integer in [0, 4294967295] (got '-1')"),
    (["lut", "build", "{file}", "--max-pairs-log2", "99"], "--max-pairs-log2: must be an integer in [1, 32]"),
    (["lut", "build", "{file}", "--out", "{file}"], "--out: {file} is a file; expected a folder"),
    (["lut", "build", "{file}", "--out", "{file}/sub"], "cannot create {file}/sub: {file} is a file"),
    (["lut", "list", "--jobs", "nan"], "lut list: --jobs: must be an integer >= 1 (got 'nan')"),
    (["lut", "fetch-evoapprox", "--tag", "../../etc"], "--tag: must be a name of letters"),
    (["lut", "fetch-evoapprox", "--dest", "{file}"], "--dest: {file} is a file; expected a folder"),
    (["data", "fetch", "cifar10", "--dir", "{file}"], "--dir: {file} is a file"),
    # train (every case fails before any training)
    (["train", "--model", "minnet", "--epochs", "-3", "--out", "{tmp}/m.axm"], "train: --epochs: must be an integer >= 1 (got '-3')"),
    (["train", "--model", "minnet", "--epochs", "0", "--out", "{tmp}/m.axm"], "--epochs: must be an integer >= 1"),
    (["train", "--model", "minnet", "--batch", "0", "--out", "{tmp}/m.axm"], "--batch: must be an integer >= 1"),
    (["train", "--model", "minnet", "--lr", "nan", "--out", "{tmp}/m.axm"], "--lr: must be a finite number > 0 and <= 10"),
    (["train", "--model", "minnet", "--lr", "inf", "--out", "{tmp}/m.axm"], "--lr: must be a finite number"),
    (["train", "--model", "minnet", "--lr", "0", "--out", "{tmp}/m.axm"], "--lr: must be a finite number > 0"),
    (["train", "--model", "minnet", "--seed", "-1", "--out", "{tmp}/m.axm"], "--seed: must be an integer in [0, "),
    (["train", "--model", "minnet", "--threads", "0", "--out", "{tmp}/m.axm"], "--threads: must be an integer >= 1"),
    (["train", "--model", "minnet", "--qat-epochs", "-1", "--out", "{tmp}/m.axm"], "--qat-epochs: must be an integer >= 0"),
    (["train", "--model", "minnet", "--qat", "--epochs", "2", "--qat-epochs", "5", "--out", "{tmp}/m.axm"],
     "--qat-epochs 5: needs --qat and at most --epochs (2)"),
    (["train", "--model", "minnet", "--dataset", " ", "--out", "{tmp}/m.axm"], "--dataset: must not be empty"),
    (["train", "--model", "minnet", "--out", "{dir}"], "train: --out: {dir} is a folder; expected a file path"),
    (["train", "--model", "minnet", "--out", "{file}/m.axm"], "cannot write {file}/m.axm: {file} is a file"),
    (["train", "--model", "bignet", "--out", "{tmp}/m.axm"], "--model: invalid choice: 'bignet'"),
    # eval / design
    (["eval", *M, "--limit", "0"], "eval: --limit: must be an integer >= 1 (got '0')"),
    (["eval", *M, "--limit", "-1"], "--limit: must be an integer >= 1"),
    (["eval", *M, "--logits", "{dir}"], "--logits: {dir} is a folder"),
    (["eval", "--model", "{tmp}/missing.axm"], "cannot read model file {tmp}/missing.axm"),
    (["eval"], "eval: the following arguments are required: --model"),
    (["design", *M, "--multiplier", "exact8s", "--out", "{dir}"], "design: --out: {dir} is a folder"),
    # attack / transfer / detect
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--data-seed", "-1"], "attack: --data-seed: must be an integer in [0, "),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--data-seed", "nan"], "--data-seed: must be an integer"),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--n", "0"], "--n: must be an integer >= 1 (got '0')"),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--n", "-1"], "--n: must be an integer >= 1"),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--batch", "0"], "--batch: must be an integer >= 1"),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--seed", "-5"], "--seed: must be an integer in [0, "),
    (["attack", *M, "--attack", "pgd", "--out", "{dir}"], "attack: --out: {dir} is a folder; expected a file path"),
    (["attack", *M, "--attack", "nope", "--out", "{tmp}/r.jsonl"], "unknown attack 'nope'"),
    (["attack", *M, "--attack", "pgd", "--out", "{tmp}/r.jsonl", "--split", "dev"], "--split: invalid choice: 'dev'"),
    (["transfer", "{tmp}/r.jsonl", "--to", "{model}:fp", "--out", "{file}"], "transfer: --out: {file} is a file"),
    (["detect", *M, "--adv", "{tmp}/r.jsonl", "--out", "{tmp}/d", "--n-clean", "1"], "detect: --n-clean: must be an integer >= 2"),
    (["detect", *M, "--adv", "{tmp}/r.jsonl", "--out", "{tmp}/d", "--seed", "-1"], "--seed: must be an integer in [0, "),
    (["detect", *M, "--adv", "{tmp}/r.jsonl", "--out", "{file}"], "detect: --out: {file} is a file"),
    # dse
    (["dse", *M, "--out", "{tmp}/o", "--pop", "0"], "dse: --pop: must be an integer >= 2 (got '0')"),
    (["dse", *M, "--out", "{tmp}/o", "--pop", "1"], "--pop: must be an integer >= 2 (got '1')"),
    (["dse", *M, "--out", "{tmp}/o", "--gens", "-1"], "dse: --gens: must be an integer >= 1 (got '-1')"),
    (["dse", *M, "--out", "{tmp}/o", "--val-images", "-5"], "--val-images: must be an integer >= 1 (got '-5')"),
    (["dse", *M, "--out", "{tmp}/o", "--probe-images", "-1"], "--probe-images: must be an integer >= 0"),
    (["dse", *M, "--out", "{tmp}/o", "--max-acc-loss", "nan"], "--max-acc-loss: must be a finite number >= 0 and <= 100 (got 'nan')"),
    (["dse", *M, "--out", "{tmp}/o", "--max-acc-loss", "inf"], "--max-acc-loss: must be a finite number"),
    (["dse", *M, "--out", "{tmp}/o", "--max-acc-loss", "-1"], "--max-acc-loss: must be a finite number >= 0"),
    (["dse", *M, "--out", "{tmp}/o", "--workers", "0"], "--workers: must be an integer >= 1"),
    (["dse", *M, "--out", "{tmp}/o", "--seed", "-1"], "--seed: must be an integer in [0, "),
    (["dse", *M, "--out", "{file}"], "dse: --out: {file} is a file; expected a folder"),
    (["dse", *M, "--out", "{tmp}/o", "--store", "{dir}"], "--store: {dir} is a folder"),
    (["dse", *M, "--out", "{tmp}/o", "--objectives", "area,speed"], "unknown DSE objective(s) ['speed']"),
    (["dse", *M, "--out", "{tmp}/o", "--objectives", "area,area"], "DSE objectives: area, area repeats"),
    (["dse", *M, "--out", "{tmp}/o", "--probe-images", "0"], "DSE probe_images: must be an integer >= 1, got 0"),
    (["dse", *M, "--out", "{tmp}/o", "--param", "n_queries=-1"], "parameter n_queries"),
    (["dse", *M, "--out", "{tmp}/o", "--executor", "dask"], "--executor dask needs --scheduler ADDRESS"),
    (["dse", *M, "--out", "{tmp}/o", "--scheduler", "tcp://h:1"], "--scheduler tcp://h:1: only used with --executor dask"),
    (["dse", *M, "--out", "{tmp}/o", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"],
     "--scheduler tcp://127.0.0.1:1: cannot reach the Dask scheduler within 5 s"),
    (["dse", *M, "--out", "{tmp}/o", "--executor", "dask", "--scheduler", "tcp://nohost"],
     "expected a Dask scheduler address tcp://HOST:PORT"),
    (["dse", "--model", "{tmp}/missing.axm", "--out", "{tmp}/o"], "cannot read model file {tmp}/missing.axm"),
    # run / report / export
    (["run", "flows/quickstart.yaml", "--out", "{file}"], "run: --out: {file} is a file"),
    (["report", "{tmp}/nothing"], "report: run_dir: {tmp}/nothing: no such folder"),
    (["export", *M, "--design", "{file}", "--out", "{tmp}/e", "--images", "0"], "export: --images: must be an integer in [1, 10000]"),
    (["export", *M, "--design", "{file}", "--out", "{tmp}/e", "--lanes", "0"], "--lanes: must be an integer in [1, 256]"),
    (["export", *M, "--design", "{file}", "--out", "{file}"], "export: --out: {file} is a file"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    from nn.bundle import save_model

    root = tmp_path_factory.mktemp("cli")
    model = save_model(tiny_bundle(), root / "tiny.axm")
    (root / "plain.txt").write_text("x\n")
    (root / "folder").mkdir()
    return root, model


def _fill(items, tmp, root, model):
    sub = {"{model}": str(model), "{file}": str(root / "plain.txt"), "{dir}": str(root / "folder"), "{tmp}": str(tmp)}
    out = []
    for a in items:
        for k, v in sub.items():
            a = a.replace(k, v)
        out.append(a)
    return out


@pytest.mark.parametrize("argv,expected", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_option_one_line(tmp_path, places, monkeypatch, argv, expected):
    root, model = places
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    argv, (expected,) = _fill(argv, tmp_path, root, model), _fill([expected], tmp_path, root, model)
    before_tmp, before_root = tree(tmp_path), tree(root)
    rc, out, err = axlab(argv)
    assert_one_line_error(rc, err, expected)
    assert rc == 2 and out == ""
    assert tree(tmp_path) == before_tmp and tree(root) == before_root


def test_bad_option_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flows", "dse", "--model", "m.axm", "--out", str(tmp_path / "o"),
                        "--pop", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = assert_one_line_error(r.returncode, r.stderr, "--pop: must be an integer >= 2 (got '0')")
    assert r.returncode == 2 and r.stdout == "" and line.startswith("axlab: dse: ")
    assert tree(tmp_path) == []


# ------------------------------------------------------------------- attack-run images
def _run(folder: Path, pairs: dict[int, np.ndarray], records: list | None = None) -> Path:
    """A hand-made attack run: RUN.jsonl + RUN.adv/<index>.npy (one success per image)."""
    run = folder / "r.jsonl"
    (folder / "r.adv").mkdir(parents=True, exist_ok=True)
    recs = records if records is not None else [{"index": i, "label": 0, "success": True} for i in pairs]
    run.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for i, a in pairs.items():
        np.save(folder / "r.adv" / f"{i}.npy", a, allow_pickle=True)
    return run


GOOD = np.random.default_rng(2).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
RUN_CASES = {
    "float_images": ({0: GOOD.astype(np.float32)}, None, "0.npy: adversarial image file must hold uint8 pixels", "float32"),
    "int64_images": ({0: GOOD.astype(np.int64)}, None, "must hold uint8 pixels in [0, 255], got dtype int64", None),
    "object_array": ({0: np.array([GOOD, None], dtype=object)}, None, "must hold uint8 pixels", "object"),
    "three_dims": ({0: GOOD[:, 0]}, None, "must have shape (2, C, H, W)", "(2, 8, 8)"),
    "single_image": ({0: GOOD[:1]}, None, "must have shape (2, C, H, W)", "(1, 1, 8, 8)"),
    "nhwc": ({0: np.ascontiguousarray(GOOD.transpose(0, 2, 3, 1))}, None, "must have shape (2, C, H, W)", "(2, 8, 8, 1)"),
    "wrong_size_for_model": ({0: np.zeros((2, 1, 9, 9), np.uint8)}, None, "images of shape (1, 9, 9) do not fit",
                             "takes (1, 8, 8)"),
    "mixed_sizes": ({0: GOOD, 1: np.zeros((2, 1, 9, 9), np.uint8)}, None, "1.npy: image shape (1, 9, 9) differs", None),
    "not_npy": ({}, None, "0.npy: not a readable .npy image file", None),
    # records: checked by the run reader (attacks.runner) or, failing that, attacks.run_images
    "index_path": ({0: GOOD}, [{"index": "../x", "label": 0, "success": True}], "r.jsonl", "index"),
    "label_text": ({0: GOOD}, [{"index": 0, "label": "cat", "success": True}], "r.jsonl", "label"),
    "success_text": ({0: GOOD}, [{"index": 0, "label": 0, "success": "yes"}], "r.jsonl", "success"),
}


@pytest.mark.parametrize("command", ["transfer", "detect"])
@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_images(tmp_path, places, case, command):
    _, model = places
    pairs, records, expected, also = RUN_CASES[case]
    run = _run(tmp_path / "run", pairs, records)
    if case == "not_npy":
        (tmp_path / "run" / "r.adv" / "0.npy").write_bytes(b"PK\x03\x04 not an npy file")
        run.write_text(json.dumps({"index": 0, "label": 0, "success": True}) + "\n")
    before = tree(tmp_path)
    if command == "transfer":
        argv = ["transfer", run, "--to", f"{model}:fp", "--out", tmp_path / "t", "--no-progress"]
    else:
        argv = ["detect", "--model", model, "--adv", run, "--out", tmp_path / "t", "--no-progress"]
    rc, out, err = axlab(argv)
    line = assert_one_line_error(rc, err, expected)
    assert str(tmp_path / "run") in line
    if also:
        assert also in line
    assert tree(tmp_path) == before


def test_good_hand_made_run_transfers(tmp_path, places):
    """The same hand-made run with good images goes through (so the cases above fail for
    their one defect)."""
    _, model = places
    run = _run(tmp_path / "run", {0: GOOD, 1: GOOD[::-1].copy()})
    rc, out, err = axlab(["transfer", run, "--to", f"{model}:fp", "--out", tmp_path / "t", "--no-progress"])
    assert rc == 0, err
    assert (tmp_path / "t" / "transfer_matrix.csv").exists()


# ------------------------------------------------------------------- DSE Python API
DSE_CASES = {
    "pop_size": ({"pop_size": 0}, "DSE pop_size: must be an integer >= 2, got 0"),
    "generations": ({"generations": -1}, "DSE generations: must be an integer >= 1, got -1"),
    "val_images": ({"val_images": True}, "DSE val_images: must be an integer >= 1, got True"),
    "max_acc_loss": ({"max_acc_loss": float("nan")}, "DSE max_acc_loss: must be a finite number"),
    "workers": ({"workers": 0}, "DSE workers: must be an integer >= 1"),
    "backend": ({"backend": "gpu"}, "DSE backend: must be torch, numba or cuda"),
    "objectives": ({"objectives": []}, "unknown DSE objective(s) (none)"),
    "attack_params": ({"attack_params": {"eps": 3}}, "parameter eps=3"),
    "scheduler": ({"executor": "dask", "scheduler": "tcp://127.0.0.1:1"}, "cannot reach the Dask scheduler"),
}


@pytest.mark.parametrize("case", sorted(DSE_CASES))
def test_bad_dse_config_api(tmp_path, places, case):
    from flows.dse import run_dse
    from hwsim.errors import AxlabError

    _, model = places
    over, expected = DSE_CASES[case]
    cfg = {"model": str(model), "multipliers": ["a.npz", "b.npz"], **over}
    with pytest.raises(AxlabError) as info:
        run_dse(cfg, tmp_path / "out", progress=False)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert tree(tmp_path) == []
