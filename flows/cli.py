"""The ``axlab`` console command.

Each command group lives in its own ``flows.cmd_*`` module exposing ``register(subparsers)``;
handlers import their heavy dependencies lazily so ``axlab --help`` stays fast.
An :class:`hwsim.errors.AxlabError` becomes one line ``axlab: <message>`` and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# torch's and numba's OpenMP pools spin against each other on few cores (measured: eval of the
# imported ResNet8 on 1,017 images took 9.5 s with ACTIVE, 5.5 s with PASSIVE on 2 cores); it
# must be set before either is imported, and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hwsim.errors import AxlabError

# command modules, in the order their groups appear in --help
COMMAND_MODULES = ["flows.cmd_lut", "flows.cmd_nn", "flows.cmd_attacks", "flows.cmd_flows", "flows.cmd_export"]


def build_parser() -> argparse.ArgumentParser:
    from flows.cliargs import AxlabArgumentParser

    parser = AxlabArgumentParser(
        prog="axlab",
        description="Approximate-computing and adversarial-robustness co-design toolkit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:  # group not written yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a refused option (one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except AxlabError as exc:
        print(f"axlab: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as exc:     # last resort for an I/O error no check foresaw (disk full, permissions)
        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"axlab: {where + ': ' if where else ''}{' '.join(str(exc.strerror or exc).split())}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("axlab: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
