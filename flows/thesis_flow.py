"""The reference study's experiments as a flow (``kind: thesis``, e.g. ``flows/thesis.yaml``).

Stages, each a list of ``axlab`` commands logged to ``commands.sh`` and skipped on rerun:

``train``    every network of ``networks`` (float training + QAT) on the flow's dataset
``eval``     Table 4.3: test accuracy of the FpNN, the QNN and the AxNN with each multiplier in
             every layer, next to the multiplier's power and area
``attacks``  Table 4.4: every attack of ``attacks.list`` on the FpNN, the QNN and the AxNNs of
             ``attacks.ax`` (the evasion set of each run: images its target, the FpNN and the
             QNN classify correctly, thesis Eq. 4.5)
``transfer`` Table 4.5: the FpNN's adversarial examples fed to the QNN and the AxNNs
``cross``    Table 4.7: adversarial examples crafted on each network's AxNNs fed to the AxNNs of
             every network
``detect``   Figures 4.23/4.24: KL-divergence detection of each network's FpNN adversarial
             examples, scored with the FpNN, the QNN and the first AxNN
``report``   report.md / report.html with the tables (``flows.report``)

Size knobs (``--set``): ``networks``, ``eval.images``, ``attacks.n``, ``attacks.list``,
``attacks.ax``, ``detect.n_clean``. The thesis' own figures are not shipped with axlab; a CSV
given as ``reference`` (columns: table, row, column, value) is shown beside the tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flows.flow import StagedRunner, any_success, skip_note
from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write

THESIS_SCHEMA: dict[str, Any] = {
    "kind": (str, "thesis"),
    "name": (str, "thesis"),
    "seed": (int, 0),
    "dataset": (str, "digits"),
    "backend": (str, "numba"),
    "multipliers": ((str, list), "../shared/evoapprox/mul8s"),
    "networks": (list, [{"model": "minnet", "epochs": 12}, {"model": "resnet8", "epochs": 10},
                        {"model": "resnet24", "epochs": 10}]),
    "train": {"qat": (bool, True)},
    "eval": {"images": (int, 0)},
    "attacks": {"n": (int, 20), "list": (list, ["fgsm", "bim", "pgd", "cw", "deepfool", "onepixel", "square",
                                                  "pixle", "npixels", "ipixels"]),
                "ax": (list, ["mul8s_1KVA", "mul8s_1L2J", "mul8s_1L12"]), "params": (dict, {}),
                "batch": (int, 10)},
    "transfer": {"attacks": (list, None)},
    "cross": {"attack": (str, "pgd")},
    "detect": {"attacks": (list, ["pgd"]), "n_clean": (int, 100)},
    "reference": (str, None),
    "report": {"title": (str, None)},
}


def _network(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):
        item = {"model": item}
    if not isinstance(item, dict) or item.get("model") not in ("minnet", "resnet8", "resnet24"):
        raise AxlabError(f"{where}: networks: each item needs model: minnet, resnet8 or resnet24, got {item!r}")
    return {"model": item["model"], "epochs": int(item.get("epochs", 10))}


class ThesisRunner(StagedRunner):
    """Runs the thesis experiments (Tables 4.3, 4.4, 4.5, 4.7; Figures 4.23/4.24)."""

    STAGES = ("train", "eval", "attacks", "transfer", "cross", "detect", "report")

    def __init__(self, flow: dict[str, Any], out: Path, progress: bool = True) -> None:
        super().__init__(flow, out, progress)
        self.nets = [_network(n, flow["_path"]) for n in flow["networks"]]
        if not self.nets:
            raise AxlabError(f"{flow['_path']}: networks: at least one network is needed")
        self.mults = self._multipliers()
        self.ax = [self._find(m) for m in flow["attacks"]["ax"]] if flow["attacks"] else []

    def prepare(self) -> None:
        """thesis.json: what the report needs to lay out the tables."""
        atomic_write(self.out / "thesis.json", json.dumps(
            {"networks": [n["model"] for n in self.nets], "multipliers": self.mults,
             "ax": self.ax, "attacks": self.flow["attacks"]["list"] if self.flow["attacks"] else [],
             "cross_attack": (self.flow["cross"] or {}).get("attack"),
             "detect_attacks": (self.flow["detect"] or {}).get("attacks", []),
             "reference": self.flow["reference"]}, indent=1))

    # -- set-up ---------------------------------------------------------------------------------
    def _multipliers(self) -> list[str]:
        from flows.dse import expand_multipliers

        spec = self.flow["multipliers"]
        items = spec if isinstance(spec, list) else [spec]
        for item in items:
            if isinstance(item, str) and ("/" in item or item.endswith(".v")) and not Path(item).exists():
                raise AxlabError(f"{self.flow['_path']}: multipliers: {item} not found (run from the repository "
                                 f"root, give a path with --set multipliers=PATH, or use 'builtin')")
        return expand_multipliers(spec)

    def _find(self, name: str) -> str:
        for m in self.mults:
            if Path(m).stem == name or m == name:
                return m
        raise AxlabError(f"{self.flow['_path']}: attacks.ax: {name} is not one of the flow's multipliers "
                         f"({', '.join(Path(m).stem for m in self.mults)})")

    def model(self, net: str) -> str:
        return str(self.out / "models" / f"{net}.axm")

    @staticmethod
    def impls(mults: list[str]) -> list[tuple[str, list[str]]]:
        """(label, axlab implementation args) of the FpNN, the QNN and the AxNNs of ``mults``."""
        return [("fp", ["--impl", "fp"]), ("q", ["--impl", "q"])] + \
            [(f"ax_{Path(m).stem}", ["--impl", "ax", "--multiplier", m]) for m in mults]

    def spec(self, net: str, label: str) -> str:
        """attacks.implspec SPEC of one implementation."""
        impl = "fp" if label == "fp" else "q" if label == "q" else "ax:" + self._find(label[3:])
        return f"{self.model(net)}:{impl}@{self.flow['backend']}"

    # -- stages ---------------------------------------------------------------------------------
    def stage_train(self, cfg: dict[str, Any]) -> None:
        (self.out / "models").mkdir(exist_ok=True)
        for n in self.nets:
            if Path(self.model(n["model"])).exists():
                continue
            self.axlab("train", "--model", n["model"], "--dataset", self.flow["dataset"], "--epochs",
                       str(n["epochs"]), "--seed", str(self.flow["seed"]), "--out", self.model(n["model"]),
                       *(["--qat"] if cfg["qat"] else []))

    def stage_eval(self, cfg: dict[str, Any]) -> None:
        d = self.out / "eval"
        d.mkdir(exist_ok=True)
        self.axlab("lut", "list", "--json", *[m for m in self.mults if Path(m).exists()],
                   *(["--builtin"] if any(not Path(m).exists() for m in self.mults) else []),
                   stdout=self.out / "luts.json")
        limit = ["--limit", str(cfg["images"])] if cfg["images"] else []
        for n in self.nets:
            net = n["model"]
            base = ["eval", "--model", self.model(net), "--dataset", self.flow["dataset"], "--backend",
                    self.flow["backend"], "--json", *limit]
            for label, args in self.impls(self.mults):
                path = d / f"{net}__{label}.json"
                if not path.exists():
                    self.axlab(*base, *args, stdout=path)

    def stage_attacks(self, cfg: dict[str, Any]) -> None:
        d = self.out / "attacks"
        d.mkdir(exist_ok=True)
        params = [f"{k}={v}" for k, v in cfg["params"].items()]
        for n in self.nets:
            net = n["model"]
            for label, impl_args in self.impls(self.ax):
                for attack in cfg["list"]:
                    stem = d / f"{net}__{label}__{attack}"
                    if Path(f"{stem}.summary.json").exists():
                        continue
                    own = [p for p in params if p.split("=")[0].startswith(f"{attack}.")]
                    args = ["attack", "--model", self.model(net), *impl_args, "--attack", attack, "--dataset",
                            self.flow["dataset"], "--n", str(cfg["n"]), "--seed", str(self.flow["seed"]),
                            "--backend", self.flow["backend"], "--batch", str(cfg["batch"]), "--out", f"{stem}.jsonl",
                            "--json", "--no-progress"]
                    if own:
                        args += ["--param", *[p.split(".", 1)[1] for p in own]]
                    self.axlab(*args, stdout=Path(f"{stem}.summary.json"))

    def stage_transfer(self, cfg: dict[str, Any]) -> None:
        for n in self.nets:
            net = n["model"]
            wanted = cfg["attacks"] or (self.flow["attacks"] or {}).get("list", [])
            runs = [str(p) for a in wanted if (p := self.out / "attacks" / f"{net}__fp__{a}.jsonl").exists()]
            if not runs:
                continue
            targets = [self.spec(net, label) for label, _ in self.impls(self.ax) if label != "fp"]
            self.axlab("transfer", *runs, "--to", *targets, "--out", str(self.out / "transfer" / net),
                       "--no-progress")

    def stage_cross(self, cfg: dict[str, Any]) -> None:
        runs, targets = [], []
        for n in self.nets:
            for label, _ in self.impls(self.ax):
                if label.startswith("ax_"):
                    run = self.out / "attacks" / f"{n['model']}__{label}__{cfg['attack']}.jsonl"
                    if run.exists():
                        runs.append(str(run))
                    targets.append(self.spec(n["model"], label))
        if runs and targets:
            self.axlab("transfer", *runs, "--to", *targets, "--out", str(self.out / "cross"), "--no-progress")

    def stage_detect(self, cfg: dict[str, Any]) -> None:
        for n in self.nets:
            net = n["model"]
            for attack in cfg["attacks"]:
                adv = self.out / "attacks" / f"{net}__fp__{attack}.jsonl"
                if not adv.exists() or Path(self.out / "detect" / f"{net}__{attack}" / "detection.csv").exists():
                    continue
                if not any_success(adv):
                    skip_note(self.out / "detect" / f"{net}__{attack}.skipped",
                              f"no successful {attack} adversarial example on the FpNN")
                    continue
                ax = [self.spec(net, f"ax_{Path(self.ax[0]).stem}")] if self.ax else []
                self.axlab("detect", "--model", self.model(net), "--impl", "fp", "q", "--backend",
                           self.flow["backend"], *(["--spec", *ax] if ax else []), "--clean",
                           self.flow["dataset"], "--n-clean", str(cfg["n_clean"]), "--adv", str(adv),
                           "--out", str(self.out / "detect" / f"{net}__{attack}"), "--seed",
                           str(self.flow["seed"]), "--no-progress")

    def stage_report(self, cfg: dict[str, Any]) -> None:
        from flows.report import write_report

        write_report(self.out, title=cfg.get("title") or "axlab: the reference study's experiments")
