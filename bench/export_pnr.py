"""Place-and-route table of exported designs: one ``axlab export --target T --lanes L`` per point,
then a Markdown row per point (device, lanes, LUTs, FFs, BRAM, DSP, Fmax, cycles, latency/image).

    python bench/export_pnr.py --model minnet.axm --design design.json --points ecp5-45k:8,ecp5-85k:8 --out DIR
    python bench/export_pnr.py --resnet8-cifar --points ecp5-85k:8 --out DIR

``--resnet8-cifar``: ResNet8 at the CIFAR-10 shape (3x32x32) with seeded random weights,
post-training quantised on 200 CIFAR-10 training images from ../shared/data/cifar-10-subset, every layer on
mul8s_bi_exact: the hardware figures (resources, Fmax, cycles) do not depend on the weight
values, so this stands in until a trained native ResNet8 is at hand (imported TFLite models are
not exportable yet). A point that does not fit is a row with the nextpnr overflow.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _resnet8_cifar(folder: Path) -> tuple[Path, Path]:
    import torch

    from nn.bundle import save_model
    from nn.data import load_dataset
    from nn.design import write_design
    from nn.models import build_model
    from nn.train import quantize_module

    spec = "cifar10:" + str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset")
    torch.manual_seed(0)
    x, _ = load_dataset(spec, "train")
    b = quantize_module(build_model("resnet8", 3, 10).eval(), x[:200], spec, "resnet8")
    model = save_model(b, folder / "resnet8_cifar_random.axm")
    design = folder / "resnet8_exact.json"
    write_design(b, ["mul8s_bi_exact"] * len(b.layers()), design)
    return model, design


def main() -> int:
    from flows.export import export
    from hwsim.errors import AxlabError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--design")
    ap.add_argument("--resnet8-cifar", action="store_true")
    ap.add_argument("--points", required=True, help="TARGET:LANES,... e.g. ecp5-85k:8,ecp5-85k:16")
    ap.add_argument("--dsp", default="never", choices=["auto", "never"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.resnet8_cifar:
        model, design = _resnet8_cifar(out)
    elif a.model and a.design:
        model, design = Path(a.model), Path(a.design)
    else:
        ap.error("give --model and --design, or --resnet8-cifar")
    rows = ["| device | lanes (per layer) | LUTs | FFs | BRAM | DSP | Fmax (MHz) | cycles/image | latency/image | "
            "images/s | wall (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for point in a.points.split(","):
        target, lanes = point.split(":")
        t0 = time.perf_counter()
        try:
            m = export(model, design, out / f"{target}_l{lanes}", images=1, lanes=int(lanes), synth=False,
                       progress=True, target=target, dsp=a.dsp)
        except AxlabError as exc:
            rows.append(f"| {target} | {lanes} | {exc} | | | | | | | | {time.perf_counter() - t0:.0f} |")
            print(rows[-1], flush=True)
            continue
        q, r = m["pnr"], m["pnr"]["resources"]
        per = "/".join(str(ly["lanes"]) for ly in m["layers"])
        rows.append(f"| {target} | {lanes} ({per}) | {r['luts']:,} | {r['ffs']:,} | {r['bram']} | {r['dsp']} | "
                    f"{q['fmax']['clk']['achieved_mhz']} | {m['cycles_per_image']:,} | "
                    f"{q['latency_us'] / 1000:.2f} ms | {q['images_per_s']} | {time.perf_counter() - t0:.0f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    (out / "table.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
