"""Flow files with bad values, unvalidated list items, stages switched off that others need,
or nothing in them: one clear line naming the file and key, exit status 2, no run folder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hwsim.errors import AxlabError
from tests.bad_input_util import assert_one_line_error, axlab, tree

ROOT = Path(__file__).resolve().parents[1]

# case -> (flow file text, extra --set overrides, expected substring of the one error line)
CASES = {
    "empty": ("", [], "the flow file is empty"),
    # YAML-level attacks: aliases ("billion laughs"), repeated keys, deep nesting, huge integers, tags
    "alias_bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
        [], "alias *a (aliases are not allowed in flow files)"),
    "alias_in_known_key": ("dse: &d {pop_size: 4}\nname: x\nreport: {notes: *d}\n", [], "alias *d"),
    "duplicate_key": ("name: a\nname: b\n", [], "key 'name' appears twice"),
    "duplicate_nested_key": ("dse: {pop_size: 4, pop_size: 6}\n", [], "key 'pop_size' appears twice"),
    "deep_nesting": ("name: " + "[" * 50000 + "]" * 50000 + "\n", [], "nested too deeply"),
    "huge_integer": ("seed: " + "9" * 10000 + "\n", [], "not a usable flow file"),
    "python_tag": ("name: !!python/object/apply:os.system ['echo pwned']\n", [], "could not determine a constructor"),
    "set_duplicate_key": ("name: x\n", ["dse={pop_size: 4, pop_size: 6}"], "value is not valid YAML"),
    "only_comments": ("# nothing here\n", [], "the flow file is empty"),
    "empty_mapping": ("{}\n", [], "the flow file is empty"),
    "binary": (b"\xff\xfe\x00garbage", [], "not a UTF-8 text flow file"),
    "top_level_list": ("- name: x\n", [], "a flow must be a mapping of sections, got list"),
    "unknown_key": ("nmae: x\n", [], "unknown key nmae"),
    "number_keys": ("1: x\nnmae: y\n", [], "unknown key 1"),
    "unknown_section_key": ("dse:\n  popsize: 4\n", [], "unknown key dse.popsize"),
    "section_not_mapping": ("dse: 5\n", [], "dse must be a mapping, got int"),
    "wrong_type": ("seed: abc\n", [], "seed: expected int, got 'abc'"),
    "bool_for_int": ("dse: {pop_size: true}\n", [], "dse.pop_size: expected int, got True"),
    "float_for_int": ("train: {epochs: 2.5}\n", [], "train.epochs: expected int, got 2.5"),
    "null_for_default": ("dse: {pop_size: null}\n", [], "dse.pop_size: expected int, got null"),
    "pop_zero": ("dse: {pop_size: 0}\n", [], "dse.pop_size: must be an integer >= 2, got 0"),
    "gens_negative": ("dse: {generations: -1}\n", [], "dse.generations: must be an integer >= 1, got -1"),
    "val_images_negative": ("dse: {val_images: -5}\n", [], "dse.val_images: must be an integer >= 1, got -5"),
    "max_acc_loss_nan": ("dse: {max_acc_loss: .nan}\n", [], "dse.max_acc_loss: must be a finite number"),
    "export_loss_negative": ("export: {max_acc_loss: -1}\n", [], "export.max_acc_loss: must be a finite number"),
    "epochs_negative": ("train: {epochs: -3}\n", [], "train.epochs: must be an integer >= 1, got -3"),
    "seed_negative": ("seed: -1\n", [], "seed: must be an integer >= 0, got -1"),
    "workers_zero": ("dse: {workers: 0}\n", [], "dse.workers: must be an integer >= 1"),
    "n_clean_one": ("detect: {n_clean: 1}\n", [], "detect.n_clean: must be an integer >= 2"),
    "name_path": ("name: ../elsewhere\n", [], "name: must be a folder name"),
    "backend_unknown": ("backend: gpu\n", [], "backend: must be one of torch, numba, cuda, got 'gpu'"),
    "executor_unknown": ("dse: {executor: slurm}\n", [], "dse.executor: must be one of local, dask"),
    "scheduler_without_dask": ("dse: {scheduler: 'tcp://h:1'}\n", [], "dse.scheduler: only used with dse.executor: dask"),
    "dask_without_scheduler": ("dse: {executor: dask}\n", [], "dse.scheduler: needed with dse.executor: dask"),
    "hw_cost_unknown": ("dse: {hw_cost: yosys}\n", [], "dse.hw_cost: must be one of model, synth"),
    "hw_target_unknown": ("dse: {hw_cost: synth, hw_target: xc7a35t}\n", [], "dse.hw_target: must be one of ecp5-25k"),
    "hw_lanes_zero": ("dse: {hw_lanes: 0}\n", [], "dse.hw_lanes"),
    "hw_dsp_unknown": ("dse: {hw_dsp: always}\n", [], "dse.hw_dsp: must be one of auto, never"),
    "multiplier_number": ("luts: {multipliers: [mul8s_bi_tr3, 5]}\n", [],
                          "luts.multipliers[1]: expected a multiplier name or path (string), got 5"),
    "multiplier_null_item": ("luts: {multipliers: [mul8s_bi_tr3, null]}\n", [], "luts.multipliers[1]: expected"),
    "multipliers_empty": ("luts: {multipliers: []}\n", [], "luts.multipliers: must not be an empty list"),
    "multipliers_null": ("luts: {multipliers: null}\n", [], "luts.multipliers: expected str or list, got null"),
    "objective_unknown": ("dse: {objectives: [area, speed]}\n", [], "dse.objectives[1]: unknown objective 'speed'"),
    "objective_repeated": ("dse: {objectives: [area, area]}\n", [], "dse.objectives: must be a non-empty list without"),
    "dse_attack_unknown": ("dse: {attack: nope}\n", [], "dse.attack: unknown attack 'nope'"),
    "dse_attack_param": ("dse: {attack_params: {n_queries: -1}}\n", [], "dse.attack_params: parameter n_queries"),
    "attack_unknown": ("attacks: {list: [{attack: nope}]}\n", [], "attacks.list[0].attack: unknown attack 'nope'"),
    "attack_null_item": ("attacks: {list: [null]}\n", [], "attacks.list[0]: unknown attack None"),
    "attack_bad_param": ("attacks: {list: [{attack: pgd, eps: 5}]}\n", [], "attacks.list[0]: parameter eps=5"),
    "attack_unknown_param": ("attacks: {list: [{attack: pgd, bogus: 1}]}\n", [], "unknown parameter 'bogus'"),
    "attack_n_zero": ("attacks: {list: [{attack: pgd, n: 0}]}\n", [], "attacks.list[0].n: must be an integer >= 1"),
    "attack_list_names": ("attacks: {list: [pgd]}\n", [], "attacks.list: pipeline items are mappings"),
    "attack_list_empty": ("attacks: {list: []}\n", [], "attacks.list: must not be an empty list"),
    "dse_off_export_on": ("dse: false\n", [], "dse: switched off, but export and attacks need it"),
    "dse_off_attacks_designs": ("dse: false\nexport: false\n", [], "dse: switched off, but attacks needs it"),
    "attacks_off": ("attacks: false\n", [], "attacks: switched off, but transfer and detect need it"),
    "luts_off": ("luts: false\n", [], "luts: switched off, but dse and eval need it"),
    "train_off": ("train: false\n", [], "train: switched off, but the other stages need a model"),
    "train_path_missing": ("train: {path: no/such/model.axm}\n", [], "train.path: model file no/such/model.axm not found"),
    "transfer_attack_not_run": ("transfer: {attack: square}\n", [], "transfer.attack: 'square' is not run"),
    "detect_attack_not_run": ("detect: {attack: fgsm}\n", [], "detect.attack: 'fgsm' is not run"),
    "set_bad_value": ("name: x\n", ["dse.pop_size=0"], "dse.pop_size: must be an integer >= 2, got 0"),
    "set_not_key_value": ("name: x\n", ["dse.pop_size"], "expected KEY=VALUE"),
    "kind_unknown": ("kind: paper\n", [], "kind: expected pipeline or thesis"),
    "thesis_attack_unknown": ("kind: thesis\nattacks: {list: [fgsm, nope]}\n", [], "attacks.list[1]: unknown attack 'nope'"),
    "thesis_network_unknown": ("kind: thesis\nnetworks: [minnet, vgg]\n", [], "networks[1]: needs model: minnet"),
    "thesis_network_epochs": ("kind: thesis\nnetworks: [{model: minnet, epochs: abc}]\n", [],
                              "networks[0].epochs: must be an integer >= 1, got 'abc'"),
    "thesis_networks_empty": ("kind: thesis\nnetworks: []\n", [], "networks: at least one network is needed"),
    "thesis_params_key": ("kind: thesis\nattacks: {params: {eps: 0.1}}\n", [], "attacks.params: key 'eps' must be ATTACK.PARAM"),
    "thesis_params_attack": ("kind: thesis\nattacks: {params: {nope.eps: 0.1}}\n", [], "unknown attack 'nope'"),
    "thesis_params_range": ("kind: thesis\nattacks: {params: {pgd.eps: 3}}\n", [], "attacks.params: pgd: parameter eps=3"),
    "thesis_multiplier_number": ("kind: thesis\nmultipliers: [7]\n", [], "multipliers[0]: expected a multiplier name"),
}


def _flow(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    text, sets, expected = CASES[case]
    path = tmp_path / "flow.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path, sets, expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flow_api(tmp_path, case):
    from flows.flow import load_flow

    path, sets, expected = _flow(tmp_path, case)
    with pytest.raises(AxlabError) as info:
        load_flow(path, sets)
    msg = str(info.value)
    assert "\n" not in msg and expected in msg, msg
    assert msg.startswith(str(path)) or msg.startswith("--set"), msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flow_cli(tmp_path, case):
    path, sets, expected = _flow(tmp_path, case)
    before = tree(tmp_path)
    argv = ["run", path, "--out", tmp_path / "run", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    rc, out, err = axlab(argv)
    assert_one_line_error(rc, err, expected)
    assert out == "" and tree(tmp_path) == before  # no run folder, no commands.sh


def test_flows_that_switch_stages_off_consistently_load(tmp_path):
    from flows.flow import load_flow

    path = tmp_path / "ok.yaml"
    path.write_text("name: small\ndse: false\nexport: false\nattacks: {designs: 0, list: [{attack: fgsm}]}\n"
                    "transfer: {attack: fgsm}\ndetect: false\n")
    flow = load_flow(path)
    assert flow["dse"] is None and flow["detect"] is None and flow["attacks"]["designs"] == 0
    for shipped in ("quickstart.yaml", "thesis.yaml"):
        load_flow(ROOT / "flows" / shipped)


def test_empty_flow_subprocess_has_no_traceback(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    r = subprocess.run([sys.executable, "-m", "flows", "run", str(path), "--out", str(tmp_path / "run")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert_one_line_error(r.returncode, r.stderr, str(path), "the flow file is empty")
    assert r.returncode == 2 and not (tmp_path / "run").exists()


# refused while the runner is set up (after the flow file loaded): still no run folder
RUNNER_CASES = {
    "thesis_multiplier_missing": (["multipliers=../no/such/folder"], "multipliers: ../no/such/folder not found"),
    "thesis_ax_unknown": (["multipliers=builtin", "attacks.ax=[mul8s_nope]"],
                          "attacks.ax: mul8s_nope is not one of the flow's multipliers"),
}


@pytest.mark.parametrize("case", sorted(RUNNER_CASES))
def test_bad_flow_runner_leaves_no_folder(tmp_path, monkeypatch, case):
    sets, expected = RUNNER_CASES[case]
    monkeypatch.chdir(ROOT)
    argv = ["run", ROOT / "flows" / "thesis.yaml", "--out", tmp_path / "a" / "run", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    rc, out, err = axlab(argv)
    assert_one_line_error(rc, err, expected)
    assert out == "" and tree(tmp_path) == []
