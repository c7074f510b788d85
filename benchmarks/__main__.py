"""python -m benchmarks TOPIC [TOPIC ...] [--quick] [--list] [--case TEXT]

Runs ``benchmarks/bench_<TOPIC>.py``'s cases and records them in benchmarks/RESULTS.md and
benchmarks/results/<TOPIC>.json.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ._harness import run_case, write

HERE = Path(__file__).resolve().parent


def topics() -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("topics", nargs="*")
    p.add_argument("--quick", action="store_true", help="small inputs, to check the benchmark itself runs")
    p.add_argument("--list", action="store_true")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--case", default=None, help="run only the cases whose name contains this text")
    p.add_argument("--dry-run", action="store_true", help="gpu: rehearse on the CPU with small sizes")
    p.add_argument("--no-install", action="store_true", help="gpu: keep the installed torch")
    args = p.parse_args(argv)
    if args.topics == ["gpu"]:  # everything that needs a GPU, in one run (benchmarks/gpu.py)
        from . import gpu

        return gpu.main(
            [a for a, on in (("--dry-run", args.dry_run), ("--no-install", args.no_install)) if on]
        )
    if args.list or not args.topics:
        print("topics:", " ".join(topics()), "grading")
        return 0
    if args.topics == ["grading"]:  # class-scale grading: its own protocol (benchmarks/grading.py)
        from . import grading

        return grading.main(["--quick"] if args.quick else [])
    for topic in args.topics:
        if topic not in topics():
            print(f"unknown topic {topic!r}; known: {topics()}", file=sys.stderr)
            return 2
        mod = importlib.import_module(f"benchmarks.bench_{topic}")
        rows = []
        for case in mod.cases(quick=args.quick):
            if args.case is not None and args.case not in case.name:
                continue
            print(f"[{topic}] {case.name} ...", flush=True)
            row = run_case(case)
            rows.append(row)
            print(
                f"  ours {row['ours_s']:.3f} s | {case.reference_name} {row.get('reference_s', float('nan')):.3f} s"
                f" | speedup {row.get('speedup', float('nan')):.2f} | {row.get('quality', {})}",
                flush=True,
            )
        if not args.no_write and not args.quick:
            write(topic, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
