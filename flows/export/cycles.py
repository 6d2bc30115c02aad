"""Clock cycles per image of the exported datapath, exactly, from the plan.

The engines have no data-dependent timing, so the count is a function of the layer shapes and
lanes alone: the sequencer pulses ``go`` for a step one clock after it starts (or after the
previous step's ``done``), the engine runs ``E`` clocks and raises ``done``, the sequencer sees
it a clock later, so every step costs ``E + 2`` clocks of the top level's ``cycles`` counter
(start to done; the input load and the output read-back are extra: one clock per byte each).
``axlab export --verify`` checks this count against the co-simulation's counter image by image.
"""
from __future__ import annotations

from flows.export.plan import Step


def step_clocks(s: Step) -> int:
    """Clocks an engine runs for one step (from the clock it sees ``go`` to ``done``)."""
    p = s.params
    if s.kind == "conv":
        k = p["C"] * p["KH"] * p["KW"]
        lanes_per_group = [min(p["P"], p["CO"] - g * p["P"]) for g in range(-(-p["CO"] // p["P"]))]
        # per group and output pixel: K multiply-accumulate clocks, one epilogue clock per lane
        return sum(p["HO"] * p["WO"] * (k + n) for n in lanes_per_group)
    if s.kind == "pool":
        return p["C"] * p["HO"] * p["WO"] * (p["KH"] * p["KW"] + 1)
    if s.kind == "add":
        return 2 * p["N"]
    if s.kind == "softmax":  # max: N; sum: 2 per code; reciprocal: 7; outputs: 2 per code
        return 5 * p["N"] + 7
    raise ValueError(f"unknown step kind {s.kind}")


def cycles_per_image(steps: list[Step]) -> int:
    """The top level's ``cycles`` counter at ``done``: sum over steps of (engine clocks + 2)."""
    return sum(step_clocks(s) + 2 for s in steps)
