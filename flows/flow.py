"""Flow files: a YAML list of stages that axlab runs in order into one run folder.

A flow is a script of ``axlab`` commands: every stage is executed as the same command line a
user would type (written to ``<out>/commands.sh`` so any step can be rerun by hand), and a
stage whose outputs exist is skipped, so an interrupted ``axlab run`` resumes. Stages:

``luts`` (multiplier set) -> ``train`` -> ``eval`` -> ``dse`` -> ``attacks`` (FpNN, QNN and
chosen Pareto designs) -> ``transfer`` -> ``detect`` -> ``export`` -> ``report``.

A flow file with ``kind: thesis`` runs the experiments of the reference study instead
(:mod:`flows.thesis_flow`). ``axlab run FLOW --set KEY=VALUE`` overrides any key (dotted path,
YAML value), which is how the size knobs are turned down for a quick run. A rerun into the same
folder must ask for the same flow, overrides included (:mod:`flows.flow_identity`).
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from hwsim.errors import AxlabError
from flows.flow_rules import RULES, check_pipeline
from hwsim.fileio import atomic_write, exclusive

# key -> (type, default); a nested dict spec is a sub-section
SCHEMA: dict[str, Any] = {
    "kind": (str, "pipeline"),
    "name": (str, "flow"),
    "seed": (int, 0),
    "dataset": (str, "digits"),
    "backend": (str, "numba"),
    "luts": {"multipliers": ((str, list), "builtin")},
    "train": {"model": (str, "minnet"), "epochs": (int, 10), "qat": (bool, True), "path": (str, None)},
    "eval": {"multipliers": (bool, True)},
    "dse": {"objectives": (list, ["area", "power", "accuracy", "robustness"]), "max_acc_loss": ((int, float), None),
            "pop_size": (int, 16), "generations": (int, 6), "val_images": (int, 300), "probe_images": (int, 12),
            "attack": (str, "square"), "attack_params": (dict, {"n_queries": 100, "eps": 16 / 255}),
            "workers": (int, 2), "executor": (str, "local"), "scheduler": (str, None),
            "hw_cost": (str, "model"), "hw_target": (str, "ecp5-85k"), "hw_lanes": (int, 1), "hw_dsp": (str, "never")},
    "attacks": {"designs": (int, 2), "n": (int, 20), "list": (list, [{"attack": "pgd"}]), "batch": (int, 10)},
    "transfer": {"attack": (str, "pgd")},
    "detect": {"attack": (str, "pgd"), "n_clean": (int, 100)},
    "export": {"images": (int, 20), "verify": (bool, True), "max_acc_loss": ((int, float), 1.0)},
    "report": {"title": (str, None)},
}


def _type_name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def validate(data: Any, where: str, schema: dict[str, Any] = SCHEMA, prefix: str = "") -> dict[str, Any]:
    """Check ``data`` against ``schema``, fill defaults; errors name the file and the key."""
    if not isinstance(data, dict):
        raise AxlabError(f"{where}: {prefix.rstrip('.') or 'the flow'} must be a mapping, got {type(data).__name__}")
    unknown = sorted((k for k in data if k not in schema), key=str)  # YAML keys may be numbers
    if unknown:
        raise AxlabError(f"{where}: unknown key {prefix}{unknown[0]} (allowed: {', '.join(sorted(schema))})")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            if key in data and data[key] is False:
                out[key] = None  # stage switched off
                continue
            out[key] = validate(data.get(key) or {}, where, spec, f"{prefix}{key}.")
            continue
        typ, default = spec
        if key in data and data[key] is None and default is not None:
            raise AxlabError(f"{where}: {prefix}{key}: expected {_type_name(typ)}, got null (leave the key out for "
                             f"the default {default!r})")
        if key not in data or data[key] is None:
            out[key] = default
            continue
        v = data[key]
        ok = isinstance(v, typ) and not (isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)))
        if not ok:
            raise AxlabError(f"{where}: {prefix}{key}: expected {_type_name(typ)}, got {v!r}")
        rule = RULES.get(f"{prefix}{key}")
        if rule is not None:
            rule(v, where, f"{prefix}{key}")
        out[key] = v
    return out


def apply_overrides(data: dict[str, Any], sets: list[str], where: str) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to the raw flow mapping."""
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise AxlabError(f"--set {item!r}: expected KEY=VALUE, e.g. dse.generations=2")
        try:
            value = _load_yaml(raw)
        except (yaml.YAMLError, RecursionError, ValueError):
            raise AxlabError(f"--set {item[:80]!r}: value is not valid YAML (or an alias, a repeated key, nested too "
                             "deeply)") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


class _FlowLoader(yaml.SafeLoader):
    """safe_load that also refuses aliases (``*name``: a few lines of nested aliases expand to
    billions of items, "billion laughs") and a key given twice in one mapping (YAML would keep
    the last silently). A flow file needs neither."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{ev.anchor} (aliases are not allowed in flow files)",
                                              ev.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_FlowLoader)     # noqa: S506 - a SafeLoader subclass


def load_flow(path: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """Read, override and validate a flow file; the result carries its ``kind`` and path."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise AxlabError(f"{path}: not a regular file; a YAML flow file is needed")
    try:
        data = _load_yaml(path.read_text())
    except OSError as exc:
        raise AxlabError(f"{path}: cannot read flow file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise AxlabError(f"{path}: not a UTF-8 text flow file (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AxlabError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise AxlabError(f"{path}: not a usable flow file (nested too deeply)") from None
    except ValueError as exc:     # e.g. an integer of more than 4300 digits
        raise AxlabError(f"{path}: not a usable flow file ({' '.join(str(exc).split())[:120]})") from None
    if data is None or data == {}:
        raise AxlabError(f"{path}: the flow file is empty (nothing to run; see flows/quickstart.yaml for a complete flow)")
    if not isinstance(data, dict):
        raise AxlabError(f"{path}: a flow must be a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data, sets or [], str(path))
    kind = data.get("kind", "pipeline")
    if kind == "thesis":
        from flows.thesis_flow import THESIS_SCHEMA, check_thesis

        flow = validate(data, str(path), THESIS_SCHEMA)
        check_thesis(flow, str(path))
    elif kind == "pipeline":
        flow = validate(data, str(path))
        check_pipeline(flow, str(path))
    else:
        raise AxlabError(f"{path}: kind: expected pipeline or thesis, got {kind!r}")
    flow["_path"] = str(path)
    return flow


def any_success(run: Path) -> bool:
    """Whether an attack run (JSONL) has at least one successful adversarial example."""
    from attacks.runner import read_records

    return any(r.get("success") for r in read_records(run))


def skip_note(path: Path, why: str) -> None:
    """Leave ``why`` in ``path`` (the report shows it) and say it on the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(why + "\n")
    print(f"[flow] skipped: {why}", flush=True)


def make_runner(flow: dict[str, Any], out: Path, progress: bool = True) -> "StagedRunner":
    if flow["kind"] == "thesis":
        from flows.thesis_flow import ThesisRunner

        return ThesisRunner(flow, out, progress)
    return FlowRunner(flow, out, progress)


class StagedRunner:
    """Runs named stages into ``out`` as axlab commands; finished stages are skipped on rerun."""

    STAGES: tuple[str, ...] = ()

    def __init__(self, flow: dict[str, Any], out: Path, progress: bool = True) -> None:
        self.flow, self.out, self.progress = flow, Path(out), progress
        # the folder is made by run() (under its lock), so a runner refused while it is set up
        # (a subclass's checks) leaves nothing behind
        self.state_path = self.out / "flow_state.json"
        self.state: dict[str, Any] = {}       # read in run(), under the folder's lock

    def axlab(self, *args: str, stdout: Path | None = None) -> None:
        """Run an axlab command in-process, logging its command line to commands.sh."""
        import contextlib
        import io

        from flows.cli import main

        line = "axlab " + " ".join(shlex.quote(a) for a in args)
        with open(self.out / "commands.sh", "a") as fh:
            fh.write(line + (f" > {shlex.quote(str(stdout))}" if stdout else "") + "\n")
        print(f"[flow] {line}", flush=True)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf) if stdout else contextlib.nullcontext():
            rc = main(list(args))
        if rc:      # no output file: it marks a finished cell, which a rerun would then skip
            raise AxlabError(f"flow stage failed: {line} (exit {rc})")
        if stdout:
            atomic_write(stdout, buf.getvalue())

    def done(self, stage: str, info: Any = True) -> None:
        self.state[stage] = info
        atomic_write(self.state_path, json.dumps(self.state, indent=1))

    def run(self) -> Path:
        """Run the unfinished stages; one process per output folder at a time.

        Makes the output folder (the lock does); a new folder that the run refuses before any
        stage (e.g. a changed flow) is removed again while still empty."""
        from attacks.resume import read_identity
        from flows.flow_identity import STATE_KEY, check_flow_state, flow_identity

        with exclusive(self.out / ".flow.lock", f"flow folder {self.out}"):
            self.state = read_identity(self.state_path, "flow state") if self.state_path.exists() else {}
            # a rerun must ask for the same flow (flows.flow_identity), checked before any stage
            ident = flow_identity(self.flow)
            check_flow_state(self.out, self.state, ident)
            if not self.state:                # recorded before any stage writes into the folder
                self.state[STATE_KEY] = ident
                atomic_write(self.state_path, json.dumps(self.state, indent=1))
            self.prepare()
            return self._run_stages()

    def prepare(self) -> None:
        """Files a flow writes before its stages (called under the folder's lock)."""

    def _run_stages(self) -> Path:
        for stage in self.STAGES:
            if self.flow.get(stage) is None:
                continue
            if stage in self.state and stage != "report":
                print(f"[flow] {stage}: done earlier, skipped", flush=True)
                continue
            t = time.perf_counter()
            getattr(self, f"stage_{stage}")(self.flow[stage])
            self.state.setdefault("seconds", {})[stage] = round(time.perf_counter() - t, 1)
            self.done(stage, self.state.get(stage, True))
        # sum of stage times, so a resumed run reports the whole flow, not only its last part
        self.state["total_seconds"] = round(sum(self.state.get("seconds", {}).values()), 1)
        self.done("report", True)
        return self.out


class FlowRunner(StagedRunner):
    """The pipeline flow (quickstart): one model, its DSE, attacks on the chosen designs."""

    STAGES = ("luts", "train", "eval", "dse", "attacks", "transfer", "detect", "export", "report")

    def __init__(self, flow: dict[str, Any], out: Path, progress: bool = True) -> None:
        path = (flow["train"] or {}).get("path")
        if path and path.startswith("zoo:"):  # a zoo model: its verified file, refused while training, before any output
            from nn.zoo import resolve

            path = str(resolve(path))
        super().__init__(flow, out, progress)
        self.model = path or str(self.out / "model.axm")

    def multipliers(self) -> list[str]:
        from flows.dse import expand_multipliers

        return expand_multipliers(self.flow["luts"]["multipliers"])

    def stage_luts(self, cfg: dict[str, Any]) -> None:
        mults = self.multipliers()
        names = [m for m in mults if not Path(m).exists()]
        paths = [m for m in mults if Path(m).exists()]
        args = ["lut", "list", "--json"] + paths + (["--builtin"] if names else [])
        self.axlab(*args, stdout=self.out / "luts.json")

    def stage_train(self, cfg: dict[str, Any]) -> None:
        if cfg["path"]:
            return
        args = ["train", "--model", cfg["model"], "--dataset", self.flow["dataset"], "--epochs", str(cfg["epochs"]),
                "--seed", str(self.flow["seed"]), "--out", self.model] + (["--qat"] if cfg["qat"] else [])
        self.axlab(*args)

    def stage_eval(self, cfg: dict[str, Any]) -> None:
        d = self.out / "eval"
        d.mkdir(exist_ok=True)
        base = ["eval", "--model", self.model, "--dataset", self.flow["dataset"], "--backend", self.flow["backend"], "--json"]
        self.axlab(*base, "--impl", "fp", stdout=d / "fp.json")
        self.axlab(*base, "--impl", "q", stdout=d / "q.json")
        if cfg["multipliers"]:
            for m in self.multipliers():
                name = Path(m).stem
                self.axlab(*base, "--impl", "ax", "--multiplier", m, stdout=d / f"ax_{name}.json")

    def stage_dse(self, cfg: dict[str, Any]) -> None:
        from flows.dse import run_dse

        dse_cfg = {k: v for k, v in cfg.items()}
        dse_cfg.update({"model": self.model, "dataset": self.flow["dataset"], "seed": self.flow["seed"],
                        "multipliers": self.flow["luts"]["multipliers"], "backend": self.flow["backend"]})
        line = (f"axlab dse --model {self.model} --dataset {self.flow['dataset']} --flow-section dse "
                f"(from the flow file) --out {self.out / 'dse'}")
        with open(self.out / "commands.sh", "a") as fh:
            fh.write(f"# {line}\n")
        res = run_dse(dse_cfg, self.out / "dse", progress=self.progress)
        self.done("dse", {"pareto": len(res.pareto), "evaluations": len(res.evaluations), "computed": res.computed})

    def _targets(self, n_designs: int) -> list[tuple[str, list[str]]]:
        """(label, implementation args) of the FpNN, the QNN and ``n_designs`` Pareto designs: the
        one export picks (smallest within the accuracy budget), then the most accurate ones."""
        out = [("fp", ["--impl", "fp"]), ("q", ["--impl", "q"])]
        pareto = self.pareto()
        if pareto and n_designs:
            budget = (self.flow["export"] or {}).get("max_acc_loss", 1.0)
            designs = [self.best_design(pareto, budget)] + [str(self.out / "dse" / p["design"]) for p in
                                                            sorted(pareto, key=lambda p: (p["acc_loss"], p["area_um2"]))]
            for design in list(dict.fromkeys(designs))[:n_designs]:
                out.append((f"ax_{Path(design).stem}", ["--impl", "ax", "--design", design]))
        return out

    def stage_attacks(self, cfg: dict[str, Any]) -> None:
        d = self.out / "attacks"
        d.mkdir(exist_ok=True)
        for label, impl_args in self._targets(cfg["designs"]):
            for item in cfg["list"]:
                item = dict(item)
                name = item.pop("attack")
                n = str(item.pop("n", cfg["n"]))
                params = [f"{k}={v}" for k, v in item.items()]
                args = ["attack", "--model", self.model, *impl_args, "--attack", name, "--dataset",
                        self.flow["dataset"], "--n", n, "--seed", str(self.flow["seed"]), "--backend",
                        self.flow["backend"], "--batch", str(cfg["batch"]), "--out", str(d / f"{label}_{name}.jsonl"),
                        "--json", "--no-progress"]
                if params:
                    args += ["--param", *params]
                self.axlab(*args, stdout=d / f"{label}_{name}.summary.json")

    def _specs(self, n_designs: int) -> list[str]:
        """Implementation SPECs (attacks.implspec) of the FpNN, QNN and chosen Pareto designs."""
        specs = []
        for _, impl_args in self._targets(n_designs):
            arg = f":{impl_args[3]}" if len(impl_args) > 2 else ""
            specs.append(f"{self.model}:{impl_args[1]}{arg}@{self.flow['backend']}")
        return specs

    def stage_transfer(self, cfg: dict[str, Any]) -> None:
        runs = sorted(str(p) for p in (self.out / "attacks").glob(f"*_{cfg['attack']}.jsonl"))
        if not runs:
            return
        n = self.flow["attacks"]["designs"] if self.flow["attacks"] else 0
        self.axlab("transfer", *runs, "--to", *self._specs(n), "--out", str(self.out / "transfer"), "--no-progress")

    def stage_detect(self, cfg: dict[str, Any]) -> None:
        adv = self.out / "attacks" / f"fp_{cfg['attack']}.jsonl"
        if not adv.exists():
            return
        if not any_success(adv):
            skip_note(self.out / "detect.skipped", f"no successful {cfg['attack']} adversarial example on the FpNN")
            return
        specs = self._specs(1)
        args = ["detect", "--model", self.model, "--impl", "fp", "q", "--backend", self.flow["backend"]]
        if len(specs) > 2:
            args += ["--spec", specs[2]]
        self.axlab(*args, "--clean", self.flow["dataset"], "--n-clean", str(cfg["n_clean"]), "--adv", str(adv),
                   "--out", str(self.out / "detect"), "--seed", str(self.flow["seed"]), "--no-progress")

    def pareto(self) -> list[dict[str, Any]]:
        """The DSE's Pareto designs ([] before the DSE stage ran)."""
        pareto_file = self.out / "dse" / "pareto.json"
        return json.loads(pareto_file.read_text())["pareto"] if pareto_file.exists() else []

    def best_design(self, pareto: list[dict[str, Any]], max_acc_loss: float) -> str:
        """The smallest-area Pareto design within ``max_acc_loss`` pp of the QNN (else the most accurate)."""
        ok = [p for p in pareto if p["acc_loss"] <= max_acc_loss]
        best = min(ok, key=lambda p: (p["area_um2"], p["acc_loss"])) if ok else \
            min(pareto, key=lambda p: (p["acc_loss"], p["area_um2"]))
        return str(self.out / "dse" / best["design"])

    def stage_export(self, cfg: dict[str, Any]) -> None:
        pareto = self.pareto()
        if not pareto:
            return
        design = self.best_design(pareto, cfg["max_acc_loss"])
        # the flow's dataset, as every other stage uses (an imported model names none of its own; a
        # trained one may name another split or layout of the data than the flow evaluates on)
        args = ["export", "--model", self.model, "--design", design, "--out", str(self.out / "export"),
                "--images", str(cfg["images"]), "--dataset", self.flow["dataset"]] + (["--verify"] if cfg["verify"] else [])
        self.axlab(*args, stdout=self.out / "export.log")

    def stage_report(self, cfg: dict[str, Any]) -> None:
        from flows.report import write_report

        write_report(self.out, title=cfg.get("title") or self.flow["name"])
