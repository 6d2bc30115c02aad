"""CLI commands of the nn package: ``data fetch``, ``train``, ``eval``, ``design``."""
from __future__ import annotations

import argparse
import json
import sys
import time

from flows.cliargs import finite_float, nonempty_str, nonneg_int, out_dir, out_file, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets (fetch CIFAR-10)")
    dsub = p.add_subparsers(dest="data_cmd", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a dataset (md5 checked)")
    f.add_argument("name", choices=["cifar10"])
    f.add_argument("--dir", type=out_dir, default=None, help="destination folder (default $AXLAB_DATA or ~/.cache/axlab/data)")
    f.set_defaults(func=_fetch)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    t = sub.add_parser("train", help="train a CNN (float, optionally QAT) and write a model file")
    t.add_argument("--arch", "--model", dest="model", required=True, choices=["minnet", "resnet8", "resnet24"],
                   help="architecture (--model is the older spelling)")
    t.add_argument("--dataset", type=nonempty_str, default="digits",
                   help="digits | cifar10[:PATH] | cifar10-thesis[:PATH] | folder:PATH")
    t.add_argument("--epochs", type=positive_int, default=20)
    t.add_argument("--qat", action="store_true", help="finish with quantisation-aware training epochs")
    t.add_argument("--qat-epochs", type=nonneg_int, default=None, help="QAT epochs out of --epochs (default epochs//4)")
    t.add_argument("--recipe", choices=["default", "cifar"], default="default",
                   help="default: Adam, batch 32, lr 2e-3, 2-px shifts (digits); cifar: SGD Nesterov momentum 0.9, "
                        "weight decay 5e-4, batch 128, lr 0.05, 2-epoch warm-up + cosine, 4-px crops + flips, "
                        "channels_last")
    t.add_argument("--batch", type=positive_int, default=None, help="default: the recipe's (32 or 128)")
    t.add_argument("--lr", type=finite_float(0, 10, lo_open=True), default=None,
                   help="peak learning rate (default: the recipe's, 2e-3 or 0.05)")
    t.add_argument("--qat-lr", type=finite_float(0, 10, lo_open=True), default=None,
                   help="peak learning rate of the QAT phase (default: a tenth of --lr); a checkpoint still in "
                        "its float phase resumes with another value")
    t.add_argument("--checkpoint", type=out_file, default=None,
                   help="training state written after every epoch (atomic); with --resume, continue from it")
    t.add_argument("--resume", action="store_true",
                   help="continue the run saved in --checkpoint (same settings; ends with the same weights as an "
                        "uninterrupted run on the same thread count)")
    t.add_argument("--seed", type=seed_int, default=0)
    t.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads while training (default: 1 for minnet, whose batch-32 steps are too "
                        "small to gain from more; all cores otherwise)")
    t.add_argument("--out", type=out_file, required=True, help="model file to write (safetensors)")
    t.set_defaults(func=_train)

    z = sub.add_parser("zoo", help="the repository's trained models, loadable as --model zoo:NAME")
    zsub = z.add_subparsers(dest="zoo_cmd", metavar="ACTION")
    zl = zsub.add_parser("list", help="zoo models with their status, accuracies and training command")
    zl.add_argument("--json", action="store_true", help="print the index entries as JSON")
    zl.set_defaults(func=_zoo_list)
    za = zsub.add_parser("add", help="record a trained model file in zoo/index.json (sha256, test accuracies)")
    za.add_argument("name", help="zoo name, e.g. resnet8-cifar10")
    za.add_argument("--file", required=True, help="the model file, directly inside zoo/")
    za.add_argument("--command", default=None, help="the exact axlab train command (default: the index's)")
    za.add_argument("--eval", action="append", default=[], metavar="LABEL=DATASET",
                    help="report fp/QNN test accuracy on DATASET as fp_LABEL/q_LABEL (repeatable)")
    za.add_argument("--backend", default="numba", choices=["torch", "numba", "cuda"])
    za.set_defaults(func=_zoo_add)
    z.set_defaults(func=lambda a: (z.print_help(), 2)[1])

    from nn.paths import add_path_option

    e = sub.add_parser("eval", help="accuracy of a model as fp, QNN (q) or AxNN (ax)")
    e.add_argument("--model", required=True)
    e.add_argument("--dataset", default=None, help="default: the model's dataset")
    e.add_argument("--images", default=None,
                   help="instead of --dataset: uint8 images (.npy, NHWC or NCHW, the model's input size)")
    e.add_argument("--labels", default=None, help="with --images: integer labels (.npy, one per image)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--impl", default="q", choices=["fp", "q", "ax"])
    g = e.add_mutually_exclusive_group()
    g.add_argument("--design", help="design.json (one multiplier per layer)")
    g.add_argument("--multiplier", help="one multiplier in every layer: LUT .npz, netlist .v or store name")
    e.add_argument("--backend", default="numba", choices=["torch", "numba", "cuda"])
    e.add_argument("--no-lowrank", action="store_true", help="numba: always use the gather kernel")
    add_path_option(e)
    e.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images")
    e.add_argument("--json", action="store_true", help="print a JSON object")
    e.add_argument("--logits", type=out_file, help="save the raw output tensor (.npy; int codes for q/ax)")
    e.add_argument("--agreement", action="store_true",
                   help="impl q: also report the QNN's agreement with the fake-quant network (fq_agreement)")
    e.set_defaults(func=_eval)

    m = sub.add_parser("import", help="convert a full-integer int8 TFLite model into an axlab model file")
    m.add_argument("tflite", help="the .tflite file")
    m.add_argument("--out", type=out_file, required=True, help="model file to write (.axm, safetensors)")
    m.set_defaults(func=_import)

    d = sub.add_parser("design", help="write a design.json assigning multipliers to layers")
    d.add_argument("--model", required=True)
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--multiplier", help="the same multiplier in every approximable layer")
    g.add_argument("--multipliers", help="comma-separated, one per approximable layer in network order")
    d.add_argument("--name", default=None, help="design name (default: from the multipliers)")
    d.add_argument("--out", type=out_file, required=True, help="design.json to write")
    d.set_defaults(func=_design)


def _fetch(args: argparse.Namespace) -> int:
    from nn.data import fetch_cifar10

    out = fetch_cifar10(args.dir)
    print(f"CIFAR-10 ready in {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from nn.api import fq_agreement, load_dataset, load_implementation, save_model
    from hwsim.errors import AxlabError
    from nn.train import train

    if args.qat_epochs is not None and (args.qat_epochs > args.epochs or not args.qat):
        raise AxlabError(f"--qat-epochs {args.qat_epochs}: needs --qat and at most --epochs ({args.epochs}) epochs")
    from pathlib import Path

    from tqdm import tqdm

    if args.qat_lr is not None and not args.qat:
        raise AxlabError(f"--qat-lr {args.qat_lr}: needs --qat")
    if args.resume and not args.checkpoint:
        raise AxlabError("--resume needs --checkpoint FILE (the file the interrupted run wrote)")
    if args.checkpoint and not args.resume and Path(args.checkpoint).exists():
        raise AxlabError(f"--checkpoint {args.checkpoint} exists: add --resume to continue that run, or delete it "
                         "to start over")
    t0 = time.time()
    x, y = load_dataset(args.dataset, "test")  # before training: a broken test split fails now, not hours later
    bundle = train(args.model, args.dataset, args.epochs, qat=args.qat, seed=args.seed,
                   qat_epochs=args.qat_epochs, batch=args.batch, lr=args.lr, qat_lr=args.qat_lr,
                   threads=args.threads if args.threads is not None else (1 if args.model == "minnet" else None),
                   recipe=args.recipe, checkpoint=args.checkpoint, resume=args.resume,
                   log=lambda line: tqdm.write(line, file=sys.stderr))
    accs = {}
    for impl in ("fp", "q"):
        accs[impl] = float((load_implementation(bundle, impl, backend="numba").logits(x).argmax(1) == y).mean())
    agree = fq_agreement(bundle, x)
    # no wall-clock times in the model file: two same-seed trainings give the same bytes
    bundle.meta.update({f"test_acc_{k}": v for k, v in accs.items()}, test_fq_agreement=agree["top1"])
    save_model(bundle, args.out)
    print(f"{args.out}: {args.model} on {args.dataset}, {args.epochs} epochs{' (QAT)' if bundle.meta['qat'] else ''}, "
          f"test accuracy fp {accs['fp']:.4f}, QNN {accs['q']:.4f}, QNN/fake-quant agreement {agree['top1']:.4f} "
          f"(output codes {agree['codes']:.4f}), {time.time() - t0:.1f} s, sha256 {bundle.sha256[:16]}")
    return 0


def _zoo_list(args: argparse.Namespace) -> int:
    from nn.zoo import format_list, read_index

    entries = read_index()
    if args.json:
        json.dump(entries, sys.stdout, indent=1)
        print()
    else:
        print(format_list(entries))
    return 0


def _zoo_add(args: argparse.Namespace) -> int:
    from hwsim.errors import AxlabError
    from nn.zoo import add_entry, format_list

    evals = {}
    for item in args.eval:
        label, sep, spec = item.partition("=")
        if not sep or not label or not spec:
            raise AxlabError(f"--eval {item!r}: expected LABEL=DATASET, e.g. cifar10_exact=cifar10:PATH")
        evals[label] = spec
    entry = add_entry(args.name, args.file, args.command, evals, backend=args.backend)
    print(format_list([entry]))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from hwsim.errors import AxlabError
    from nn.api import fq_agreement, load_dataset, load_implementation, load_model

    if args.agreement and args.impl != "q":
        raise AxlabError(f"--agreement compares the QNN with fake quant: it needs --impl q, not {args.impl}")
    if args.labels is not None and args.images is None:
        raise AxlabError("--labels goes with --images")
    if args.images is not None and args.dataset is not None:
        raise AxlabError("give either --images or --dataset, not both")
    bundle = load_model(args.model)
    if args.images is not None:
        from nn.api import load_images, load_labels

        ds = args.images
        x = load_images(args.images, bundle)
        y = load_labels(args.labels, len(x), bundle.num_classes) if args.labels is not None else None
    else:
        ds = args.dataset or bundle.dataset
        if not ds:
            raise AxlabError(f"{args.model} names no dataset: give --dataset or --images")
        x, y = load_dataset(ds, args.split)
    if args.limit is not None:
        x = x[:args.limit]
        y = y[:args.limit] if y is not None else None
    from nn.paths import apply_path_option

    apply_path_option(args)
    impl = load_implementation(bundle, args.impl, design=args.design, multiplier=args.multiplier,
                               backend=args.backend, lowrank=not args.no_lowrank)
    t0 = time.time()
    logits = impl.logits(x, progress=not args.json)
    dt = time.time() - t0
    acc = None if y is None else float((logits.argmax(1) == y).mean()) if len(y) else float("nan")
    if args.logits:
        np.save(args.logits, logits)
    res = {"accuracy": acc, "n": int(len(x)), "impl": args.impl, "name": impl.name, "backend": args.backend,
           "dataset": ds, "split": args.split, "model": bundle.sha256, "seconds": round(dt, 3),
           "images_per_s": round(len(x) / dt, 1) if dt > 0 else None}
    if impl.engine is not None:
        res["layers"] = impl.engine.describe()
        if hasattr(impl.engine, "path_report"):  # chosen exact path per layer (nn.paths)
            res["paths"] = impl.engine.path_report()
    if args.agreement:
        agree = fq_agreement(bundle, x, backend=args.backend)
        res["fq_agreement"], res["fq_code_agreement"] = agree["top1"], agree["codes"]
    if args.json:
        json.dump(res, sys.stdout)
        print()
    else:
        print(f"{impl.name} [{args.backend}] on {ds}/{args.split}: "
              + (f"accuracy {acc:.4f}" if acc is not None else "no labels") + f" ({len(x)} images, {dt:.2f} s)"
              + (f", QNN/fake-quant agreement {res['fq_agreement']:.4f}" if args.agreement else ""))
    return 0


def _import(args: argparse.Namespace) -> int:
    from nn.api import save_model
    from nn.tflite_import import import_tflite

    bundle = import_tflite(args.tflite)
    save_model(bundle, args.out)
    ops = sorted({n["op"][4:] for n in bundle.graph.nodes if n["op"] != "input"})
    print(f"{args.out}: {len(bundle.graph.nodes) - 1} operators ({', '.join(ops)}), {len(bundle.layers())} "
          f"approximable layers, input {bundle.meta['input_dtype']} {tuple(bundle.input_shape)} (C, H, W), "
          f"{bundle.num_classes} outputs, sha256 {bundle.sha256[:16]}")
    return 0


def _design(args: argparse.Namespace) -> int:
    from nn.api import load_model, write_design

    bundle = load_model(args.model)
    mults = [args.multiplier] if args.multiplier else [m.strip() for m in args.multipliers.split(",") if m.strip()]
    if args.multipliers and len(mults) != len(bundle.layers()):
        from hwsim.errors import AxlabError

        raise AxlabError(f"{len(mults)} multipliers given but the model has {len(bundle.layers())} approximable "
                         f"layers ({', '.join(bundle.layers())})")
    d = write_design(bundle, mults, args.out, name=args.name)
    print(f"{args.out}: design {d['name']} for {len(d['layers'])} layers")
    return 0
