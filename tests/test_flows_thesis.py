"""The thesis flow (kind: thesis) end to end on a reduced size, and flow-file overrides."""
from __future__ import annotations

import json

import pytest

from hwsim.errors import AxlabError
from tests.hwsim_util import REPO

BUILTIN = ["mul8s_bi_exact", "mul8s_bi_tr3", "mul8s_bi_tr4"]


def test_overrides_and_thesis_schema(tmp_path):
    from flows.flow import load_flow

    flow = load_flow(REPO / "flows" / "thesis.yaml", ["networks=[minnet]", "attacks.n=3", "detect.n_clean=7"])
    assert flow["kind"] == "thesis" and flow["networks"] == ["minnet"]
    assert flow["attacks"]["n"] == 3 and flow["detect"]["n_clean"] == 7
    with pytest.raises(AxlabError, match="KEY=VALUE"):
        load_flow(REPO / "flows" / "thesis.yaml", ["networks"])
    with pytest.raises(AxlabError, match="attacks.n: expected int"):
        load_flow(REPO / "flows" / "thesis.yaml", ["attacks.n=many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: paper\n")
    with pytest.raises(AxlabError, match="kind: expected pipeline or thesis"):
        load_flow(bad)


def test_a_failed_stage_command_leaves_no_output_file(tmp_path):
    """A cell counts as done once its output file exists: a failed command (here a missing model;
    in a run, e.g., another process holding the cell's lock) must not write one, or a rerun would
    skip the cell; a command that succeeds writes its stdout there."""
    from flows.flow import StagedRunner

    runner = StagedRunner({}, tmp_path, progress=False)
    out = tmp_path / "cell.summary.json"
    with pytest.raises(AxlabError, match="exit 2"):
        runner.axlab("eval", "--model", str(tmp_path / "missing.axm"), "--dataset", "digits", "--json",
                     stdout=out)
    assert not out.exists()
    runner.axlab("zoo", "list", stdout=out)
    assert "minnet-cifar10" in out.read_text()
    assert (tmp_path / "commands.sh").read_text().count("axlab ") == 2


def test_thesis_flow_reduced_writes_every_table(tmp_path):
    from flows.flow import load_flow, make_runner
    from nn.api import save_model
    from tests.nn_fixtures import minnet_qat

    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    save_model(minnet_qat(), out / "models" / "minnet.axm")  # the train stage keeps an existing model
    ref = tmp_path / "ref.csv"
    ref.write_text("table,row,column,value\n4.3,QNN,minnet accuracy %,98.0\n")
    flow = load_flow(REPO / "flows" / "thesis.yaml", [
        "networks=[minnet]", f"multipliers={json.dumps(BUILTIN)}", "eval.images=40", "attacks.n=2",
        "attacks.list=[fgsm,square]", "attacks.ax=[mul8s_bi_tr4]",
        "attacks.params={square.n_queries: 30, fgsm.eps: 0.3}", "cross.attack=fgsm", "detect.attacks=[fgsm]", "detect.n_clean=8", f"reference={ref}"])
    make_runner(flow, out, progress=False).run()

    assert json.loads((out / "eval" / "minnet__ax_mul8s_bi_tr4.json").read_text())["n"] == 40
    square = json.loads((out / "attacks" / "minnet__q__square.summary.json").read_text())
    assert square["n"] == 2
    assert (out / "transfer" / "minnet" / "transfer_matrix.csv").exists()
    assert (out / "cross" / "transfer_matrix.csv").exists()
    report = (out / "report.md").read_text()
    for heading in ("Table 4.3", "Table 4.4", "Table 4.5", "Table 4.7", "Figures 4.23/4.24"):
        assert heading in report, heading
    assert "AxNN mul8s_bi_tr4" in report and "98.0" in report  # reference figures shown
    # every stage done: a rerun skips all of them and leaves the same tables
    before = (out / "eval" / "minnet__q.json").read_text()
    make_runner(flow, out, progress=False).run()
    assert (out / "eval" / "minnet__q.json").read_text() == before
