"""Everything that needs a GPU, in one run: ``python -m benchmarks gpu`` (or ``python3 tasks.py bench gpu``).

On a machine with an NVIDIA GPU (one H100/H200: about 10 minutes):

1. installs the CUDA build of torch 2.13.0 into the running environment (``--no-install`` skips it);
2. runs the GPU tests, ``pytest -m gpu`` (CPU/CUDA agreement of every kernel);
3. runs the CUDA benchmark rows: NMF on CUDA (both losses), heat diffusion on CUDA, NeuralEE end to end at
   1,300,000 synthetic cells (kNN + entropic affinities + training, peak GPU memory);
4. writes them to ``benchmarks/results/gpu.json`` and the "GPU" section of ``benchmarks/RESULTS.md``.

``--dry-run`` rehearses every step on the CPU with small sizes and writes nothing but
``benchmarks/results/gpu-dry-run.json`` (what CI runs): the install command is printed, not run; the GPU tests are
collected (they skip without CUDA); the benchmark rows run on the CPU at 5,000 cells.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_INDEX = "https://download.pytorch.org/whl/cu126"
TORCH = "torch==2.13.0"


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def install(dry: bool) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--force-reinstall",
        "--no-deps",
        TORCH,
        "--index-url",
        CUDA_INDEX,
    ]
    if dry:
        print("would run:", " ".join(cmd))
        return {"install": "skipped (dry run)", "command": " ".join(cmd)}
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"installing the CUDA build of torch failed ({' '.join(cmd)})")
    return {"install": "ok", "command": " ".join(cmd)}


def gpu_tests(dry: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    if dry:
        cmd.append("--collect-only")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    print(tail)
    n = re.search(r"(\d+)(?:/\d+)? tests? collected", proc.stdout)
    return {
        "gpu_tests": tail,
        "collected": int(n.group(1)) if n else None,
        "ok": proc.returncode == 0 or (dry and proc.returncode in (0, 5)),
    }


def bench_rows(dry: bool) -> list[dict]:
    import numpy as np
    import torch

    from benchmarks._harness import run_case
    from benchmarks.bench_ee import _scaling_case

    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not dry:
        from benchmarks import bench_manifold, bench_nmf

        for mod in (bench_nmf, bench_manifold):
            for case in mod.cases(quick=False):
                if "cuda" in case.name.lower() or case.device == "cuda":
                    print(f"[{mod.__name__}] {case.name}", flush=True)
                    rows.append(run_case(case))
    n = 5_000 if dry else 1_300_000
    case = _scaling_case(n, quick=False)
    print(f"[ee] {case.name} on {device}", flush=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row = run_case(case)
    if device == "cuda":
        row.setdefault("quality", {})["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    rows.append(row)
    for r in rows:
        print(f"  {r['case']}: {r['ours_s']:.2f} s {r.get('quality', {})}", flush=True)
    del np
    return rows


def write(rows: list[dict], meta: dict) -> None:
    from benchmarks._harness import _fmt, machine

    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"## GPU ({machine()}, {stamp})",
        "",
        f"`python -m benchmarks gpu`: {meta['gpu_tests']} (pytest -m gpu); the CUDA rows:",
        "",
        "| case | ours (s) | reference | reference (s) | speedup | quality |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = ", ".join(f"{k}={_fmt(v)}" for k, v in (r.get("quality") or {}).items())
        lines.append(
            f"| {r['case']} | {_fmt(r['ours_s'])} | {r['reference']} | {_fmt(r.get('reference_s', '—'))} | "
            f"{_fmt(r.get('speedup', '—'))} | {q} |"
        )
    section = "\n".join(lines) + "\n"
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    text = re.sub(r"## GPU \(.*?(?=\n## |\Z)", "", text, flags=re.S)
    marker = "## All rows"
    path.write_text(
        text.replace(marker, section + "\n" + marker) if marker in text else text + "\n" + section
    )


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dry = "--dry-run" in args
    t0 = time.perf_counter()
    meta = {"dry_run": dry, "date": time.strftime("%Y-%m-%d %H:%M")}
    _step("1/4 torch with CUDA")
    meta.update(install(dry or "--no-install" in args))
    if not dry:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device is visible to torch: use --dry-run to rehearse on the CPU", file=sys.stderr)
            return 2
    _step("2/4 pytest -m gpu")
    meta.update(gpu_tests(dry))
    _step("3/4 CUDA benchmark rows" + (" (dry run: CPU, small)" if dry else ""))
    rows = bench_rows(dry)
    _step("4/4 results")
    meta["seconds"] = time.perf_counter() - t0
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / ("gpu-dry-run.json" if dry else "gpu.json")).write_text(
        json.dumps({**meta, "rows": rows}, indent=1, default=str)
    )
    if not dry:
        write(rows, meta)
    print(f"done in {meta['seconds']:.0f} s" + (" (dry run: RESULTS.md untouched)" if dry else ""))
    return 0 if meta["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
