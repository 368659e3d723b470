#!/usr/bin/env python
"""A Flower federation on this machine: one SuperLink and N SuperNodes on 127.0.0.1 (insecure, loopback only).

    python scripts/flower_local.py --nodes 3 -- --method fedavg --scenario smoke --scale 0.2
        start them, run `eval.py --engine flower <args>` against them, stop them
    python scripts/flower_local.py --nodes 3 --serve
        start them, print one JSON line {"superlink", "pids", "home"} and wait (SIGTERM or Ctrl-C stops them);
        then, in another shell: DRAKE_FLOWER_SUPERLINK=<superlink> DRAKE_FLOWER_NODES=3 python eval.py --engine flower ...

Clients are dealt round-robin over the nodes (sorted by node id). Logs: the home folder (kept after a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drake.fl.flower_engine import LocalFederation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def serve(fed: LocalFederation, home: Path) -> int:
    """Print where the federation is, then report exited processes until SIGTERM or Ctrl-C."""
    print(json.dumps({"superlink": fed.address, "pids": fed.pids(), "home": str(home)}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    reported: set[str] = set()
    while True:  # a lost node is reported, not fatal: the run using it fails on its own (timeout)
        for line in sorted(set(fed.dead()) - reported):
            print(f"exited: {line}", file=sys.stderr, flush=True)
            reported.add(line)
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    from drake.cli import guarded

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=2, help="SuperNodes to start (default 2)")
    p.add_argument("--home", default=None, help="folder for FLWR_HOME and the logs (default: a new temp folder)")
    p.add_argument("--serve", action="store_true", help="only start the federation and wait")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="after --: arguments for eval.py (--engine flower is added)")
    args = p.parse_args(argv)

    def run() -> int:
        from drake.fl.flower_engine import ENV_NODES, ENV_SUPERLINK, LocalFederation

        home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="drake-flower-local-"))
        code = 1
        try:
            with LocalFederation(args.nodes, home) as fed:
                if args.serve:
                    return serve(fed, home)
                import eval as eval_script

                os.environ[ENV_SUPERLINK], os.environ[ENV_NODES] = fed.address, str(args.nodes)
                code = eval_script.main([*(a for a in args.eval_args if a != "--"), "--engine", "flower"])
                return code
        finally:
            if code == 0 and not args.home:
                shutil.rmtree(home, ignore_errors=True)
            elif not args.serve:
                print(f"flower logs: {home}", file=sys.stderr)

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
