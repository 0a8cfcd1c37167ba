"""The runtime doctor's cost in instructions, which a noisy machine cannot move.

    python benchmarks/runtime_instructions.py [--workloads simple_reads,lazy_loop] [--calls 10]

For each workload of ``runtime_overhead.py``, counts the instructions Valgrind's callgrind
sees in a child process that runs it bare, under the floor (a no-op listener on each event
the doctor listens to), under the least an N+1 detector can do (``runtime_overhead``'s
``_minimal_listeners``) and with ``sqla_doctor.install()``; each count is taken with and
without ``--calls`` runs of the workload and the difference divided by the calls, so
interpreter start-up and imports drop out. ``PYTHONHASHSEED=0`` makes the counts identical
run after run. Every child registers and removes the doctor's listeners first, as
``runtime_overhead.py``'s alternating runs do (SQLAlchemy keeps checking for connection
events once any was registered). Needs ``valgrind``; about a minute per workload and side.

Instructions are not time (cache misses and allocation weigh differently), but a change to
a listener that saves instructions saves time: compare counts to decide, read
``runtime_overhead.py``'s ratios for what a user feels.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDES = ("bare", "floor", "orm_event", "minimal", "doctor")
_COLLECTED = re.compile(r"Collected : ([\d,]+)")


def child(workload: str, side: str, calls: int) -> None:
    sys.path.insert(0, str(HERE))
    import runtime_overhead

    import sqla_doctor

    fn = runtime_overhead.WORKLOADS[workload]
    sqla_doctor.install(config=runtime_overhead.CONFIG)
    sqla_doctor.uninstall()
    runtime_overhead._watch(side)
    for _ in range(3):
        fn()
    # A full collection walks every object SQLAlchemy and the test models made; when the
    # measured calls happen to trigger one more or one less of them, the count moves by
    # a few percent for no reason in the code. The workloads leave no cyclic garbage, so
    # freezing what exists keeps the collections (young ones still run) to the calls' own
    # objects.
    gc.collect()
    gc.freeze()
    for _ in range(calls):
        fn()


def instructions(workload: str, side: str, calls: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            workload,
            side,
            str(calls),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed:\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(workload: str, side: str, calls: int) -> float:
    return (instructions(workload, side, calls) - instructions(workload, side, 0)) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="simple_reads,lazy_loop")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "SIDE", "CALLS"))
    args = parser.parse_args(argv)
    if args.child:
        workload, side, calls = args.child
        child(workload, side, int(calls))
        return 0
    if shutil.which("valgrind") is None:
        print("runtime_instructions.py needs valgrind on PATH", file=sys.stderr)
        return 2
    import sqlalchemy

    print(f"Python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}")
    print(
        f"{'workload':<14} {'bare':>12} "
        + " ".join(f"{side:>9}" for side in SIDES[1:])
        + "  (instructions per call)"
    )
    for workload in args.workloads.split(","):
        counts = {side: per_call(workload, side, args.calls) for side in SIDES}
        bare = counts["bare"]
        ratios = " ".join(f"{counts[side] / bare:>8.3f}x" for side in SIDES[1:])
        print(f"{workload:<14} {bare / 1e6:>10.2f}M {ratios}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
