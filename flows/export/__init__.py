"""FPGA-bound export of a design (network + one multiplier netlist per layer) with bit-exact
RTL co-simulation.

``export(model, design, out)`` writes into ``out`` (built in a temporary folder next to it,
then renamed, so a failed export leaves nothing behind):

  rtl/        the project's RTL (``<repo>/rtl``: layer, pooling and add engines, the shared
              requantiser, ROM, RAM),
              the multiplier netlists with module names made unique (``mul_<k>_<module>.v``)
              and the generated top ``axlab_net_top.v`` that runs the network layer by layer
  netlists/   the multiplier netlists exactly as found in the user's library (provenance)
  mem/        ``$readmemh`` files: per conv/dense layer the weights (one word of P lanes per
              address) and per output channel {rs, m0, const}
  tb/         the cocotb test bench, its test images and the simulator's logits on them
  synth/      yosys scripts (generic gates, iCE40) and their resource report
  manifest.json   per-layer multipliers, netlist sha256s, cost estimates, accuracy, file hashes

The hardware reproduces :mod:`nn.engine`'s integer semantics exactly (signed multipliers:
the activation code and the weight code go straight into the netlist, int32 accumulation,
``const = bias_q - za * sum(w)``, fixed-point requantisation with per-channel m0/rs, ReLU as
the lower clamp, max/avg pooling on codes, requantised residual add). Every file is a pure
function of the inputs: no timestamps, sorted keys, stable ordering.

An imported TFLite network (``tfl_*`` ops) gets TFLite's own arithmetic instead (TFLite's
requantiser, ADD, pooling and int8 SOFTMAX engines, ``rtl/axlab_tfl_*.v``; :mod:`.plan_tflite`).

Modules, one per step: :mod:`.plan` (engine steps, RAM layout, lanes), :mod:`.multipliers`
(the netlist behind each layer's LUT), :mod:`.memh` (ROM contents), :mod:`.verilog` (the
generated top), :mod:`.synth` (yosys), :mod:`.generate` (``export``: writes the folder),
:mod:`.integrity` (an export folder read back as untrusted input), :mod:`.verify` (``verify``:
the checks, then the co-simulation against the outputs recorded at export time), :mod:`.folder`
(names, file helpers). Place and route will be one more step module (``pnr``) beside ``synth``.
"""

from __future__ import annotations

from flows.export.folder import (DEFAULT_IMAGES, DEFAULT_LANES, FORMAT, RTL_DIR, RTL_FILES, TB_MODULE, TOP,
                                 VERILATOR_ARGS)
from flows.export.generate import export
from flows.export.integrity import check_export
from flows.export.verify import verify

__all__ = ["export", "verify", "check_export", "DEFAULT_IMAGES", "DEFAULT_LANES", "FORMAT", "RTL_DIR", "RTL_FILES",
           "TB_MODULE", "TOP", "VERILATOR_ARGS"]
