"""TFLite import: every tensor of the imported QNN equals LiteRT's reference kernels
(``OpResolverType.BUILTIN_REF``), on the small generated test models (tests/data/tflite/,
every operator and option of the import) and on the shared MLPerf Tiny models (skipped
when ../shared is absent); damaged and unsupported files give one AxlabError line.

LiteRT (PyPI ``ai-edge-litert``, the ``dev`` extra) is the peer: tests that need it skip
cleanly where it is not installed.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwsim.errors import AxlabError
from nn.api import load_images, load_implementation, load_model
from nn.bundle import ModelBundle, save_model
from nn.tflite_engine import TfliteEngine
from nn.tflite_import import import_tflite
from nn.tflite_ops import mbqm, quantize_multiplier, rdbpot, srdhm

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "tflite"
SHARED = ROOT.parent / "shared"
MLPERF = SHARED / "models" / "mlperf-tiny"
RESNET8 = MLPERF / "pretrainedResnet_quant.tflite"
VWW = MLPERF / "vww_96_14blk_836k_int8.tflite"
CIFAR_TEST = SHARED / "data" / "cifar-10-subset" / "cifar-10-batches-py" / "test_batch"
TEST_MODELS = ["conv_relu_pool", "dw_uint8_dequant", "residual_float_in", "dw_stride_pertensor"]


def _litert_inputs(bundle: ModelBundle, x: np.ndarray) -> np.ndarray:
    """What LiteRT is fed for uint8 images x (N, C, H, W): the import's input convention."""
    xt = x.transpose(0, 2, 3, 1)
    dt = bundle.meta["input_dtype"]
    if dt == "int8":
        return (xt.astype(np.int16) - 128).astype(np.int8)
    if dt == "uint8":
        return np.ascontiguousarray(xt)
    return xt.astype(np.float32) / np.float32(255.0)


def _compare_all(path: Path, x: np.ndarray) -> int:
    """Assert every int8 activation tensor of the torch (reference) and numba backends equals
    LiteRT BUILTIN_REF's; returns how many tensors were compared."""
    pytest.importorskip("ai_edge_litert")
    from tests.tflite_ref import reference_tensors

    bundle = import_tflite(path)
    ref = {t.index: t for t in reference_tensors(path, _litert_inputs(bundle, x)).values()}
    compared = 0
    for backend in ("torch", "numba"):
        mine = TfliteEngine(bundle, backend=backend).tensors(x)
        compared = 0
        for t in ref.values():
            if t.is_constant or t.dtype != np.int8:
                continue  # weights, shape tensors, the float/uint8 input, a dequantised output
            assert t.index in mine, f"{path.name}: tensor {t.index} ({t.name}) has no axlab node"
            got = mine[t.index]
            assert got.shape == t.values.shape, (t.name, got.shape, t.values.shape)
            diff = int((got != t.values).sum())
            assert diff == 0, f"{path.name} [{backend}]: tensor {t.name}: {diff} of {got.size} codes differ from LiteRT"
            compared += 1
    return compared


def _cifar(n: int) -> tuple[np.ndarray, np.ndarray]:
    if not CIFAR_TEST.exists():
        pytest.skip("../shared/data/cifar-10-subset absent")
    with open(CIFAR_TEST, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return d[b"data"][:n].reshape(-1, 3, 32, 32), np.asarray(d[b"labels"][:n], dtype=np.int64)


def _resize_bilinear(x: np.ndarray, side: int) -> np.ndarray:
    """uint8 NCHW -> side x side: torch bilinear (align_corners=False, no antialias), rounded."""
    y = torch.nn.functional.interpolate(torch.from_numpy(x).double(), size=(side, side), mode="bilinear",
                                        align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


# ------------------------------------------------------------------------ arithmetic
def test_fixed_point_helpers_known_values() -> None:
    t = torch.tensor
    # RoundingDivideByPOT rounds ties away from zero; SRDHM rounds the doubled high half
    assert rdbpot(t([-880, 880, -879, 16, -16]), 5).tolist() == [-28, 28, -27, 1, -1]
    assert srdhm(t([-(1 << 31)]), -(1 << 31)).tolist() == [(1 << 31) - 1]  # the one overflow case
    assert srdhm(t([-1217]), 1552512742).tolist() == [-880]
    # double rounding (gemmlowp) vs single rounding on the same near-tie: -27.4945...
    assert mbqm(t([-1217]), 1552512742, -5).tolist() == [-28]
    assert mbqm(t([-1217]), 1552512742, -5, single=True).tolist() == [-27]
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)  # flushed to zero


# ------------------------------------------------------------------------ test models
@pytest.mark.parametrize("name", TEST_MODELS)
def test_every_tensor_equals_litert_reference(name: str) -> None:
    path = DATA / f"{name}.tflite"
    bundle = import_tflite(path)
    x = np.random.default_rng(12).integers(0, 256, size=(24, *bundle.input_shape), dtype=np.uint8)
    assert _compare_all(path, x) >= 4


def test_every_test_model_option_is_imported() -> None:
    ops = {n["op"] for name in TEST_MODELS for n in import_tflite(DATA / f"{name}.tflite").graph.nodes}
    assert ops >= {"tfl_quantize", "tfl_conv", "tfl_dwconv", "tfl_fc", "tfl_add", "tfl_avgpool", "tfl_maxpool",
                   "tfl_mean", "tfl_pad", "tfl_reshape", "tfl_softmax"}
    dw = [n for n in import_tflite(DATA / "dw_stride_pertensor.tflite").graph.nodes if n["op"] == "tfl_dwconv"][0]
    assert dw["multiplier"] == 2 and dw["stride"] == [2, 2] and sum(dw["pad4"]) > 0
    assert import_tflite(DATA / "dw_uint8_dequant.tflite").meta["dequantize_output"] is True


def test_round_trip_model_file(tmp_path: Path) -> None:
    path = DATA / "residual_float_in.tflite"
    bundle = import_tflite(path)
    x = np.random.default_rng(3).integers(0, 256, size=(8, *bundle.input_shape), dtype=np.uint8)
    want = load_implementation(bundle, "q").logits(x)
    save_model(bundle, tmp_path / "m.axm")
    again = load_model(tmp_path / "m.axm")
    assert np.array_equal(load_implementation(again, "q").logits(x), want)
    assert np.array_equal(load_implementation(str(path), "q").logits(x), want)  # .tflite taken directly


# ------------------------------------------------------------------------ bad inputs
BAD = {
    "bad_truncated": "damaged TFLite file",
    "bad_buffer_index": "buffer 99",
    "bad_short_weights": "needs 72 bytes",
    "bad_opcode_index": "opcode index 7",
    "bad_tensor_index": "tensor 42",
    "bad_scale_count": "2 scales for 4 output channels",
    "bad_float_model": "float (unquantised) model",
    "bad_unsupported_logistic": "unsupported operator LOGISTIC",
    "bad_unsupported_gelu": "unsupported operator GELU",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_one_line_error(name: str) -> None:
    path = DATA / f"{name}.tflite"
    with pytest.raises(AxlabError) as e:
        import_tflite(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and BAD[name] in msg, msg


def test_mutated_files_never_crash() -> None:
    """Seeded byte flips and cuts of a valid model: imported or refused with AxlabError."""
    from nn.tflite_import import import_tflite_bytes

    data = (DATA / "conv_relu_pool.tflite").read_bytes()
    rng = np.random.default_rng(7)
    refused = 0
    for i in range(150):
        b = bytearray(data)
        if i % 5 == 0:
            b = b[:int(rng.integers(8, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        try:
            import_tflite_bytes(bytes(b), "mutant.tflite")
        except AxlabError as exc:
            assert "\n" not in str(exc) and "mutant.tflite" in str(exc)
            refused += 1
    assert refused > 30


def test_damaged_model_file_attribute(tmp_path: Path) -> None:
    bundle = import_tflite(DATA / "conv_relu_pool.tflite")
    conv = next(n for n in bundle.graph.nodes if n["op"] == "tfl_conv")
    conv["pad4"] = [0, 9, 0, 0]
    with pytest.raises(AxlabError, match="padding .* must be smaller than the window"):
        save_model(bundle, tmp_path / "m.axm")
    assert not (tmp_path / "m.axm").exists()


def test_images_of_the_wrong_size(tmp_path: Path) -> None:
    bundle = import_tflite(DATA / "conv_relu_pool.tflite")  # 12 x 12 x 3
    np.save(tmp_path / "ok.npy", np.zeros((2, 12, 12, 3), np.uint8))
    assert load_images(tmp_path / "ok.npy", bundle).shape == (2, 3, 12, 12)
    np.save(tmp_path / "big.npy", np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(AxlabError, match=r"do not fit the model input: need \(N, 3, 12, 12\)"):
        load_images(tmp_path / "big.npy", bundle)
    with pytest.raises(AxlabError):
        load_implementation(bundle, "q").logits(np.zeros((2, 3, 32, 32), np.uint8))


def test_cli_import_refuses_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "m.axm"
    r = subprocess.run([sys.executable, "-m", "flows", "import", str(DATA / "bad_unsupported_gelu.tflite"),
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "unsupported operator GELU" in r.stderr
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "flows", "import", str(DATA / "dw_uint8_dequant.tflite"),
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert load_model(out).meta["input_dtype"] == "uint8"


# ------------------------------------------------------------------------ shared models
@pytest.mark.skipif(not RESNET8.exists(), reason="../shared/models/mlperf-tiny absent")
def test_resnet8_every_tensor_50_cifar_images() -> None:
    x, _ = _cifar(50)
    assert _compare_all(RESNET8, x) == 17  # input + 16 operator outputs


@pytest.mark.skipif(not VWW.exists(), reason="../shared/models/mlperf-tiny absent")
@pytest.mark.parametrize("n", [4, pytest.param(200, marks=pytest.mark.slow)])
def test_vww_every_tensor_resized_cifar_images(n: int) -> None:
    """Every tensor on CIFAR-10 test images resized bilinearly to 96x96; the acceptance's 200
    images (slow: about 2.5 minutes under load ~10 on 2 cores), 4 in the default suite."""
    x, _ = _cifar(n)
    assert _compare_all(VWW, _resize_bilinear(x, 96)) == 32  # input + 31 operator outputs


@pytest.mark.slow
@pytest.mark.skipif(not RESNET8.exists(), reason="../shared/models/mlperf-tiny absent")
def test_resnet8_accuracy_and_output_codes_all_test_images() -> None:
    """Acceptance: 87.91 % on the 1,017 exact test images; output codes = LiteRT's reference."""
    pytest.importorskip("ai_edge_litert")
    from tests.tflite_ref import output_codes

    x, y = _cifar(1017)
    bundle = load_model(RESNET8)
    codes = load_implementation(bundle, "q").logits(x)
    assert round(float((codes.argmax(1) == y).mean()), 4) == 0.8791
    assert np.array_equal(codes, output_codes(RESNET8, _litert_inputs(bundle, x)).astype(np.int32))


# ------------------------------------------------------------------------ AxNN
def test_axnn_exact_lut_equals_qnn_and_backends_agree() -> None:
    """Exact LUTs (signed, unsigned) give the QNN bit for bit; an approximate LUT changes the
    output and gives the same codes on the torch gather, numba gather and low-rank paths
    (depthwise layers included: one gather per channel group)."""
    from hwsim.lut import Lut, exact_table
    from tests.nn_fixtures import fullrank_lut, lowrank_lut

    for name in ("dw_uint8_dequant", "residual_float_in"):
        b = import_tflite(DATA / f"{name}.tflite")
        x = np.random.default_rng(5).integers(0, 256, size=(4, *b.input_shape), dtype=np.uint8)
        q = TfliteEngine(b).logits(x)
        k = len(b.layers())
        for signed in (True, False):
            exact = Lut("exact", exact_table(8, 8, signed), 8, 8, signed)
            for backend in ("torch", "numba"):
                assert np.array_equal(TfliteEngine(b, [exact] * k, backend).logits(x), q), (name, signed, backend)
        for lut in (lowrank_lut(2, 3), fullrank_lut(5, signed=False)):
            ref = TfliteEngine(b, [lut] * k, "torch").logits(x)
            assert not np.array_equal(ref, q)
            for lowrank in (False, True):
                assert np.array_equal(TfliteEngine(b, [lut] * k, "numba", lowrank=lowrank).logits(x), ref)


@pytest.mark.slow
@pytest.mark.skipif(not RESNET8.exists() or not VWW.exists(), reason="../shared/models/mlperf-tiny absent")
def test_axnn_evoapprox_backends_shared_models() -> None:
    """Both MLPerf models: exact LUT == QNN; a mixed design of the 13 EvoApprox mul8s gives
    identical codes on torch, numba gather and numba low-rank (about 4 minutes)."""
    from hwsim.lut import Lut, exact_table
    from tests.nn_fixtures import evo_luts

    luts = evo_luts()
    if len(luts) != 13:
        pytest.skip("../shared/evoapprox absent")
    x, _ = _cifar(4)
    for path, xx in ((RESNET8, x), (VWW, _resize_bilinear(x[:2], 96))):
        b = load_model(path)
        k = len(b.layers())
        q = TfliteEngine(b).logits(xx)
        exact = Lut("exact", exact_table(8, 8, True), 8, 8, True)
        assert np.array_equal(TfliteEngine(b, [exact] * k, "numba").logits(xx), q)
        mixed = [luts[i % len(luts)] for i in range(k)]
        ref = TfliteEngine(b, mixed, "torch").logits(xx)
        assert not np.array_equal(ref, q)
        assert np.array_equal(TfliteEngine(b, mixed, "numba", lowrank=False).logits(xx), ref)
        assert np.array_equal(TfliteEngine(b, mixed, "numba").logits(xx), ref)


@pytest.mark.slow
def test_axnn_cuda_backend_in_simulator() -> None:
    """The cuda gather on an imported model (depthwise multiplier 2, per-tensor weights) equals
    the torch gather; numba's CUDA simulator in a subprocess (it must be enabled first)."""
    import os

    script = (
        "import numpy as np\n"
        "from nn.tflite_import import import_tflite\n"
        "from nn.tflite_engine import TfliteEngine\n"
        "from tests.nn_fixtures import fullrank_lut\n"
        f"b = import_tflite({str(DATA / 'dw_stride_pertensor.tflite')!r})\n"
        "x = np.random.default_rng(0).integers(0, 256, (1, *b.input_shape), dtype=np.uint8)\n"
        "luts = [fullrank_lut(5)] * len(b.layers())\n"
        "ref = TfliteEngine(b, luts, 'torch').logits(x)\n"
        "assert np.array_equal(TfliteEngine(b, luts, 'cuda').logits(x), ref)\n"
        "print('ALL-OK')\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ALL-OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]


# ------------------------------------------------------------------------ float twin
def test_float_twin_tracks_the_qnn_and_has_gradients() -> None:
    """The fp twin (dequantised weights, float activations) and the fake-quant twin (BPDA
    surrogate) of each test model agree with the QNN's top-1 on most random images and are
    differentiable with respect to the [0, 1] input."""
    for name in TEST_MODELS:
        b = import_tflite(DATA / f"{name}.tflite")
        x = np.random.default_rng(9).integers(0, 256, size=(64, *b.input_shape), dtype=np.uint8)
        q = load_implementation(b, "q")
        top = q.logits(x).argmax(1)
        fp = load_implementation(b, "fp").logits(x)
        assert fp.shape == (64, b.num_classes) and fp.dtype == np.float32
        sur = q.surrogate()
        xt = torch.from_numpy(x).float().div(255).requires_grad_(True)
        z = sur(xt)
        assert float((z.argmax(1).numpy() == top).mean()) >= 0.8, name
        assert float((fp.argmax(1) == top).mean()) >= 0.7, name
        z.sum().backward()
        assert xt.grad is not None and float(xt.grad.abs().sum()) > 0, name


@pytest.mark.skipif(not RESNET8.exists(), reason="../shared/models/mlperf-tiny absent")
def test_float_twin_resnet8_accuracy() -> None:
    x, y = _cifar(300)
    b = load_model(RESNET8)
    q = load_implementation(b, "q", backend="numba").logits(x).argmax(1)
    fp = load_implementation(b, "fp").logits(x).argmax(1)
    with torch.no_grad():
        fq = load_implementation(b, "q").surrogate()(torch.from_numpy(x).float() / 255).argmax(1).numpy()
    assert (fp == y).mean() > 0.85 and (fq == y).mean() > 0.85
    assert (fp == q).mean() > 0.95 and (fq == q).mean() > 0.95
