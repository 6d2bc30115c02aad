"""The reference study's experiments as a flow (``kind: thesis``: ``flows/thesis.yaml`` on
digits, ``flows/thesis_cifar10.yaml`` on CIFAR-10 with the model zoo).

Stages, each a list of ``axlab`` commands logged to ``commands.sh`` and skipped on rerun:

``train``    every network given as an architecture (float training + QAT) on its dataset;
             networks given by ``path`` (``zoo:NAME``, a model file, an int8 TFLite file) are
             used as they are (:mod:`flows.thesis_networks`)
``dse``      (optional) per network, NSGA-II over the multipliers; AxNN v1 = the lowest-power
             Pareto design within ``dse.max_acc_loss`` points of the QNN
``eval``     Table 4.3: test accuracy of the FpNN, the QNN, AxNN v1 and the AxNN with each
             multiplier in every layer, next to the multiplier's power and area
``attacks``  Table 4.4: every attack of ``attacks.list`` on the FpNN, the QNN, AxNN v1 and the
             AxNNs of ``attacks.ax``; the evasion set of each run (thesis Eq. 4.5): images its
             target, the FpNN and the QNN classify correctly, or with ``attacks.study`` every
             implementation of the network
``pixels``   (optional) Tables 3.4/3.7: labelled attack runs on one implementation of one network;
             their evasion set is ``axlab attack``'s default (images the FpNN and the QNN classify
             correctly), since these tables compare attacks on that one network, not implementations
``transfer`` Table 4.5: the FpNN's adversarial examples fed to the QNN and the AxNNs
``cross``    Tables 4.6/4.7: adversarial examples crafted on each network's AxNNs fed to the
             AxNNs (``cross.to: ax``) or every implementation (``all``) of every network
``detect``   Figures 4.23/4.24: KL-divergence detection of each network's FpNN adversarial
             examples (a TFLite network: its QNN's), scored with its FpNN, QNN and first AxNN
``report``   report.md / report.html with the tables (``flows.report_thesis``)

Size knobs (``--set``): ``networks``, ``eval.images``, ``attacks.n``, ``attacks.n_by``,
``attacks.list``, ``attacks.ax``, ``dse.*``, ``pixels.*``, ``detect.n_clean``. ``reference``: the
folder of the study's CSV tables (``../shared/thesis``; read when the report is written, shown
beside each table with a note), or a CSV (table, row, column, value) shown under the tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flows.flow import StagedRunner, any_success, skip_note
from flows.thesis_networks import slug
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
    "dse": (dict, None),                 # off unless given (DSE_SCHEMA)
    "eval": {"images": (int, 0)},
    "attacks": {"n": (int, 20), "list": (list, ["fgsm", "bim", "pgd", "cw", "deepfool", "onepixel", "square",
                                                  "pixle", "npixels", "ipixels"]),
                "ax": (list, ["mul8s_1KVA", "mul8s_1L2J", "mul8s_1L12"]), "params": (dict, {}),
                "batch": (int, 10), "study": (bool, False), "n_by": (dict, {})},
    "pixels": (dict, None),              # off unless given (PIXELS_SCHEMA)
    "transfer": {"attacks": (list, None)},
    "cross": {"attack": (str, "pgd"), "to": (str, "ax")},
    "detect": {"attacks": (list, ["pgd"]), "n_clean": (int, 100)},
    "reference": (str, None),
    "report": {"title": (str, None), "notes": (dict, {})},
}
# ``dse:`` per network: NSGA-II over per-layer multipliers; AxNN v1 = the lowest-power Pareto
# design within ``max_acc_loss`` points of the QNN (validation images), as in the study
DSE_SCHEMA: dict[str, Any] = {
    "objectives": (list, ["power", "accuracy"]), "max_acc_loss": ((int, float), 2.0), "pop_size": (int, 16),
    "generations": (int, 6), "val_images": (int, 300), "probe_images": (int, 0), "workers": (int, 1),
    "attack": (str, "square"), "attack_params": (dict, {"n_queries": 100, "eps": 8 / 255}), "init": (str, "random"),
}
# ``pixels:`` Tables 3.4/3.7: labelled attack runs against one implementation of one network
PIXELS_SCHEMA: dict[str, Any] = {"network": (str, None), "impl": (str, "fp"), "n": (int, 20), "runs": (list, [])}


def _check_pixels(cfg: dict[str, Any], where: str, names: list[str]) -> None:
    from flows.flow_rules import _attack_list

    if cfg["network"] not in names:
        raise AxlabError(f"{where}: pixels.network: must be one of the flow's networks ({', '.join(names)}), "
                         f"got {cfg['network']!r}")
    if cfg["impl"] not in ("fp", "q"):
        raise AxlabError(f"{where}: pixels.impl: must be fp or q, got {cfg['impl']!r}")
    if cfg["n"] < 1:
        raise AxlabError(f"{where}: pixels.n: must be an integer >= 1, got {cfg['n']}")
    runs = cfg["runs"]
    if not runs or not all(isinstance(r, dict) and isinstance(r.get("label"), str) and r["label"] for r in runs):
        raise AxlabError(f"{where}: pixels.runs: a non-empty list of {{label: NAME, attack: ATTACK, ...}}")
    _attack_list([{k: v for k, v in r.items() if k != "label"} for r in runs], where, "pixels.runs")
    slugs = [slug(r["label"]) for r in runs]
    if len(set(slugs)) != len(slugs):
        raise AxlabError(f"{where}: pixels.runs: labels must be distinct, got {[r['label'] for r in runs]}")


def check_thesis(flow: dict[str, Any], where: str) -> None:
    """Rules of a thesis flow beyond its schema (called by the loader and the runner): the
    optional dse and pixels sections, attacks.n_by and cross.to. Fills in section defaults."""
    from flows.flow import validate
    from flows.flow_rules import _attack_name
    from flows.thesis_networks import check_networks

    nets = check_networks(flow["networks"], where)
    for key, schema in (("dse", DSE_SCHEMA), ("pixels", PIXELS_SCHEMA)):
        if flow.get(key) is not None:
            flow[key] = validate(flow[key], where, schema, f"{key}.")
    if flow.get("pixels") is not None:
        _check_pixels(flow["pixels"], where, [n["name"] for n in nets])
    for k, v in ((flow.get("attacks") or {}).get("n_by") or {}).items():
        _attack_name(k, where, f"attacks.n_by.{k}")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AxlabError(f"{where}: attacks.n_by.{k}: must be an integer >= 1, got {v!r}")
    if (flow.get("cross") or {}).get("to", "ax") not in ("ax", "all"):
        raise AxlabError(f"{where}: cross.to: must be ax (AxNNs only) or all (every implementation)")


class ThesisRunner(StagedRunner):
    """Runs the thesis experiments (Tables 3.4, 3.7, 4.3-4.7; Figures 4.23/4.24)."""

    STAGES = ("train", "dse", "eval", "attacks", "pixels", "transfer", "cross", "detect", "report")

    def __init__(self, flow: dict[str, Any], out: Path, progress: bool = True) -> None:
        from flows.thesis_networks import check_networks, has_float, resolve_path

        where = flow["_path"]
        check_thesis(flow, where)
        self.nets = check_networks(flow["networks"], where)
        # zoo models resolved (and refused while still training) before the run folder is made
        for n in self.nets:
            n["file"] = resolve_path(n["path"]) if n["path"] else None
            n["float"] = has_float(n["file"]) if n["file"] else True
        super().__init__(flow, out, progress)
        self.mults = self._multipliers()
        self.ax = [self._find(m) for m in flow["attacks"]["ax"]] if flow["attacks"] else []

    def prepare(self) -> None:
        """thesis.json: what the report needs to lay out the tables."""
        atomic_write(self.out / "thesis.json", json.dumps(
            {"networks": [n["name"] for n in self.nets],
             "nets": [{k: n[k] for k in ("name", "study", "path", "float")} for n in self.nets],
             "multipliers": self.mults, "ax": self.ax,
             "attacks": self.flow["attacks"]["list"] if self.flow["attacks"] else [],
             "cross_attack": (self.flow["cross"] or {}).get("attack"),
             "detect_attacks": (self.flow["detect"] or {}).get("attacks", []),
             "dse": self.flow.get("dse"), "pixels": self.flow.get("pixels"),
             "notes": (self.flow["report"] or {}).get("notes", {}),
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

    def net(self, name: str) -> dict[str, Any]:
        return next(n for n in self.nets if n["name"] == name)

    def model(self, net: str) -> str:
        n = self.net(net)
        return n["file"] or str(self.out / "models" / f"{net}.axm")

    def dataset(self, net: str) -> str:
        return self.net(net)["dataset"] or self.flow["dataset"]

    def v1(self, net: str) -> Path:
        """design.json of the network's AxNN v1 (written by the dse stage)."""
        return self.out / "dse" / net / "v1.json"

    def impls(self, net: str, mults: list[str]) -> list[tuple[str, list[str]]]:
        """(label, axlab implementation args) of the network's FpNN (when it has one), QNN, AxNN v1
        (when the DSE chose one) and the AxNNs with one of ``mults`` in every layer."""
        out = [("fp", ["--impl", "fp"])] if self.net(net)["float"] else []
        out.append(("q", ["--impl", "q"]))
        if self.v1(net).exists():
            out.append(("ax_v1", ["--impl", "ax", "--design", str(self.v1(net))]))
        return out + [(f"ax_{Path(m).stem}", ["--impl", "ax", "--multiplier", m]) for m in mults]

    def spec(self, net: str, label: str) -> str:
        """attacks.implspec SPEC of one implementation."""
        impl = "fp" if label == "fp" else "q" if label == "q" else \
            f"ax:{self.v1(net)}" if label == "ax_v1" else "ax:" + self._find(label[3:])
        return f"{self.model(net)}:{impl}@{self.flow['backend']}"

    def study(self, net: str) -> list[str]:
        """``--study`` args: every implementation of the network under study (thesis Eq. 4.5)."""
        if not (self.flow["attacks"] or {}).get("study"):
            return []
        return ["--study", *[self.spec(net, label) for label, _ in self.impls(net, self.ax)]]

    # -- stages ---------------------------------------------------------------------------------
    def stage_train(self, cfg: dict[str, Any]) -> None:
        (self.out / "models").mkdir(exist_ok=True)
        for n in self.nets:
            if n["file"] or Path(self.model(n["name"])).exists():
                continue
            self.axlab("train", "--model", n["model"], "--dataset", self.dataset(n["name"]), "--epochs",
                       str(n["epochs"]), "--seed", str(self.flow["seed"]), "--out", self.model(n["name"]),
                       *(["--qat"] if cfg["qat"] else []))

    def stage_dse(self, cfg: dict[str, Any]) -> None:
        """Per network: NSGA-II over the flow's multipliers, then AxNN v1 (lowest power within
        ``max_acc_loss`` points of the QNN; the most accurate design when none is)."""
        from flows.dse import run_dse

        for n in self.nets:
            net, d = n["name"], self.out / "dse" / n["name"]
            if self.v1(net).exists():
                continue
            dse_cfg = {**{k: v for k, v in cfg.items() if k != "workers"}, "workers": cfg["workers"],
                       "model": self.model(net), "dataset": self.dataset(net), "seed": self.flow["seed"],
                       "multipliers": self.mults, "backend": self.flow["backend"], "executor": "local"}
            with open(self.out / "commands.sh", "a") as fh:
                fh.write(f"# axlab dse --model {self.model(net)} --dataset {self.dataset(net)} "
                         f"(settings: the flow's dse section) --out {d}\n")
            print(f"[flow] dse {net}", flush=True)
            res = run_dse(dse_cfg, d, progress=self.progress)
            ok = [p for p in res.pareto if p["acc_loss"] <= cfg["max_acc_loss"]]
            if ok:
                best = min(ok, key=lambda p: (p["power_mw"], p["acc_loss"]))
            else:   # no design within the budget, so no feasible front: the most accurate one found
                from nn.api import load_model, write_design

                best = dict(min(res.evaluations, key=lambda p: (p["acc_loss"], p["power_mw"])))
                best["design"] = "designs/most_accurate.json"
                write_design(load_model(self.model(net)), [self.mults[g] for g in best["genes"]],
                             d / best["design"], name="most_accurate")
                print(f"[flow] dse {net}: no design within {cfg['max_acc_loss']} points of the QNN; AxNN v1 is "
                      f"the most accurate one found ({best['acc_loss']:.2f} points below)", flush=True)
            atomic_write(d / "v1.choice.json", json.dumps(
                {"design": best["design"], "within_budget": bool(ok), "max_acc_loss": cfg["max_acc_loss"],
                 **{k: best.get(k) for k in ("multipliers", "power_mw", "area_um2", "accuracy", "acc_loss")}},
                indent=1))
            atomic_write(self.v1(net), (d / best["design"]).read_text())

    def stage_eval(self, cfg: dict[str, Any]) -> None:
        d = self.out / "eval"
        d.mkdir(exist_ok=True)
        self.axlab("lut", "list", "--json", *[m for m in self.mults if Path(m).exists()],
                   *(["--builtin"] if any(not Path(m).exists() for m in self.mults) else []),
                   stdout=self.out / "luts.json")
        limit = ["--limit", str(cfg["images"])] if cfg["images"] else []
        for n in self.nets:
            net = n["name"]
            base = ["eval", "--model", self.model(net), "--dataset", self.dataset(net), "--backend",
                    self.flow["backend"], "--json", *limit]
            for label, args in self.impls(net, self.mults):
                path = d / f"{net}__{label}.json"
                if not path.exists():
                    self.axlab(*base, *args, stdout=path)

    def _attack(self, net: str, label: str, impl_args: list[str], attack: str, n: int, params: list[str],
                stem: Path, study: bool = True) -> None:
        """One ``axlab attack`` run into ``stem``.jsonl (skipped when its summary exists; a note
        when the attack needs a float network the implementation lacks)."""
        from flows.thesis_networks import NEEDS_FLOAT

        if Path(f"{stem}.summary.json").exists() or Path(f"{stem}.skipped").exists():
            return
        if attack in NEEDS_FLOAT and not self.net(net)["float"]:
            skip_note(Path(f"{stem}.skipped"), f"{attack} needs a float network; {net} is an int8 TFLite "
                                               "model without one")
            return
        args = ["attack", "--model", self.model(net), *impl_args, "--attack", attack, "--dataset",
                self.dataset(net), "--n", str(n), "--seed", str(self.flow["seed"]), "--backend",
                self.flow["backend"], "--batch", str((self.flow["attacks"] or {}).get("batch", 10)),
                "--out", f"{stem}.jsonl", "--json", "--no-progress", *(self.study(net) if study else [])]
        if params:
            args += ["--param", *params]
        self.axlab(*args, stdout=Path(f"{stem}.summary.json"))

    def _params(self, net: str, attack: str, cfg: dict[str, Any]) -> list[str]:
        merged = {**cfg["params"], **self.net(net)["params"]}
        return [f"{k.split('.', 1)[1]}={v}" for k, v in merged.items() if k.split(".")[0] == attack]

    def stage_attacks(self, cfg: dict[str, Any]) -> None:
        d = self.out / "attacks"
        d.mkdir(exist_ok=True)
        for n in self.nets:
            net = n["name"]
            for label, impl_args in self.impls(net, self.ax):
                for attack in cfg["list"]:
                    n_img = cfg["n_by"].get(attack, cfg["n"])
                    self._attack(net, label, impl_args, attack, n_img, self._params(net, attack, cfg),
                                 d / f"{net}__{label}__{attack}")

    def stage_pixels(self, cfg: dict[str, Any]) -> None:
        """Tables 3.4/3.7: each labelled run against ``pixels.impl`` of ``pixels.network``."""
        d = self.out / "pixels"
        d.mkdir(exist_ok=True)
        net = cfg["network"]
        for run in cfg["runs"]:
            item = {k: v for k, v in run.items() if k != "label"}
            attack, n = item.pop("attack"), item.pop("n", cfg["n"])
            self._attack(net, cfg["impl"], ["--impl", cfg["impl"]], attack, n,
                         [f"{k}={v}" for k, v in item.items()], d / slug(run["label"]), study=False)

    def stage_transfer(self, cfg: dict[str, Any]) -> None:
        for n in self.nets:
            net = n["name"]
            wanted = cfg["attacks"] or (self.flow["attacks"] or {}).get("list", [])
            found = [(a, p) for a in wanted if (p := self.out / "attacks" / f"{net}__fp__{a}.jsonl").exists()]
            runs = [(a, p) for a, p in found if any_success(p)]
            if not runs:
                continue
            labels = [label for label, _ in self.impls(net, self.ax) if label != "fp"]
            out = self.out / "transfer" / net
            self.axlab("transfer", *[str(p) for _, p in runs], "--to", *[self.spec(net, lb) for lb in labels],
                       "--out", str(out), "--no-progress")
            # which attack / implementation each row / column of transfer_matrix.csv is
            atomic_write(out / "layout.json", json.dumps({"sources": [a for a, _ in runs], "targets": labels}))

    def stage_cross(self, cfg: dict[str, Any]) -> None:
        """Tables 4.6/4.7: examples crafted on each network's AxNNs fed to the AxNNs (``to: ax``)
        or to every implementation (``to: all``) of every network."""
        runs, targets = [], []
        for n in self.nets:
            for label, _ in self.impls(n["name"], self.ax):
                if label.startswith("ax_"):
                    run = self.out / "attacks" / f"{n['name']}__{label}__{cfg['attack']}.jsonl"
                    if run.exists() and any_success(run):
                        runs.append((n["name"], label, str(run)))
                if label.startswith("ax_") or cfg["to"] == "all":
                    targets.append((n["name"], label))
        if runs and targets:
            self.axlab("transfer", *[r for _, _, r in runs], "--to", *[self.spec(*t) for t in targets],
                       "--out", str(self.out / "cross"), "--no-progress")
            atomic_write(self.out / "cross" / "layout.json", json.dumps(
                {"sources": [[n, lb] for n, lb, _ in runs], "targets": [list(t) for t in targets]}))

    def stage_detect(self, cfg: dict[str, Any]) -> None:
        for n in self.nets:
            net = n["name"]
            src = "fp" if n["float"] else "q"       # a TFLite network: its QNN's examples
            for attack in cfg["attacks"]:
                adv = self.out / "attacks" / f"{net}__{src}__{attack}.jsonl"
                if not adv.exists() or Path(self.out / "detect" / f"{net}__{attack}" / "detection.csv").exists():
                    continue
                if not any_success(adv):
                    skip_note(self.out / "detect" / f"{net}__{attack}.skipped",
                              f"no successful {attack} adversarial example on the {'FpNN' if src == 'fp' else 'QNN'}")
                    continue
                axs = [lb for lb, _ in self.impls(net, self.ax) if lb.startswith("ax_")]
                ax = [self.spec(net, axs[0])] if axs else []
                impls = ["fp", "q"] if n["float"] else ["q"]
                self.axlab("detect", "--model", self.model(net), "--impl", *impls, "--backend",
                           self.flow["backend"], *(["--spec", *ax] if ax else []), "--clean",
                           self.dataset(net), "--n-clean", str(cfg["n_clean"]), "--adv", str(adv),
                           "--out", str(self.out / "detect" / f"{net}__{attack}"), "--seed",
                           str(self.flow["seed"]), "--no-progress")

    def stage_report(self, cfg: dict[str, Any]) -> None:
        from flows.report import write_report

        write_report(self.out, title=cfg.get("title") or "axlab: the reference study's experiments")
