"""The options of a run (``eval.py``, ``drake run``, ``drake study``), without importing torch, so that building
the ``drake`` parser (and ``drake list``, ``drake --help``) stays instant."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from drake.errors import SpecError
from drake.protocol import DEFAULT_PROTOCOL, PROTOCOLS
from drake.spec import list_scenarios

DEFAULT_METHOD = "fedmosaic"
DEFAULT_SCENARIO = "drake-dynamic"


def check_seeds(seeds: Sequence[int]) -> None:
    """Run seeds are distinct and 0 or more (``eval.py``/``drake run``/``drake study`` ``--seeds``)."""
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {' '.join(map(str, seeds))}: expected distinct seeds of 0 or more (e.g. --seeds 0 1 2)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"federated method (default {DEFAULT_METHOD}); see `drake list methods`")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO, help=f"scenario name or YAML path (default {DEFAULT_SCENARIO}); known: {', '.join(list_scenarios())}")
    p.add_argument("--pool", default=None, help="model pool of the scenario (hetero | homo | cross; default: the scenario's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (one result file with mean/std)")
    p.add_argument("--out", default="runs", help="output directory for results, plots and checkpoints")
    p.add_argument("--config", default=None, help="YAML file of method settings (and `engine:` settings), or a named "
                   "config: the paper's ablations fedmosaic-no-rela, -no-pq, -no-align, -scalar-gate, -homo (with --pool homo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting; engine.* keys go to the engine (repeatable)")
    p.add_argument("--engine", default=os.environ.get("DRAKE_ENGINE") or "auto",
                   help="engine: auto (processes on a CPU machine with 2+ cores, else sequential), sequential, processes "
                   "or flower; all give the same numbers (default: $DRAKE_ENGINE, else auto)")
    p.add_argument("--protocol", default=None, choices=PROTOCOLS.names(),
                   help=f"evaluation protocol (default {DEFAULT_PROTOCOL}: FedMosaic's, each client scored on its model after "
                   "its own local training; server-global: on the server's model for it); see drake/protocol.py")
    p.add_argument("--scale", type=float, default=1.0, help="DRAKE-synth size multiplier (1.0: 300 train / 100 test per task)")
    p.add_argument("--image-size", type=int, default=32, help="DRAKE-synth image size in pixels")
    p.add_argument("--data-dir", default=None, help="built data directory (default: built on demand under the data root: $DRAKE_HOME, else <checkout>/.drake, else ~/.cache/drake)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: 1 on machines with <= 2 cores, where tiny models gain little from a second thread and slow down ~10x when the cores are shared)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last finished round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")  # fmt: skip
