"""Timing harness: our kernel and a reference on the same input, side by side in one process."""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Case:
    """One workload.

    ``ours`` and ``reference`` take no arguments and return whatever ``quality`` needs;
    ``quality(ours_out, ref_out)`` returns a dict of numbers (objective, ARI, errors, ...) to record.
    ``reference`` may be None when a reference cannot run here (``reference_name`` then says why).
    """

    name: str
    ours: Callable[[], Any]
    reference: Callable[[], Any] | None
    reference_name: str
    quality: Callable[[Any, Any], dict] | None = None
    repeats: int = 3
    warmup: bool = True
    device: str = "cpu"
    notes: str = ""


def _time(fn: Callable[[], Any], repeats: int, warmup: bool) -> tuple[list[float], Any, float]:
    import resource

    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return times, out, peak_mb


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def run_case(case: Case) -> dict:
    t_ours, out_ours, rss_ours = _time(case.ours, case.repeats, case.warmup)
    row: dict[str, Any] = dict(
        case=case.name,
        device=case.device,
        reference=case.reference_name,
        repeats=case.repeats,
        ours_s=statistics.median(t_ours),
        ours_all_s=t_ours,
        peak_rss_mb_after_ours=rss_ours,
        notes=case.notes,
    )
    out_ref = None
    if case.reference is not None:
        t_ref, out_ref, rss_ref = _time(case.reference, case.repeats, case.warmup)
        row.update(
            reference_s=statistics.median(t_ref),
            reference_all_s=t_ref,
            peak_rss_mb_after_ref=rss_ref,
            speedup=statistics.median(t_ref) / max(statistics.median(t_ours), 1e-12),
        )
    if case.quality is not None:
        row["quality"] = case.quality(out_ours, out_ref)
    return row


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write(topic: str, rows: list[dict]) -> None:
    (HERE / "results").mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    mach = machine()
    out = HERE / "results" / f"{topic}.json"
    # rows of cases not run this time (``--case``) are kept from the previous file
    kept = [
        r
        for r in (json.loads(out.read_text()).get("rows", []) if out.exists() else [])
        if r.get("case") not in {n["case"] for n in rows}
    ]
    payload = {"topic": topic, "date": stamp, "machine": mach, "rows": kept + rows}
    out.write_text(json.dumps(payload, indent=2, default=str))
    md = HERE / "RESULTS.md"
    lines = md.read_text().splitlines() if md.exists() else []
    if not lines:
        lines = [
            "# Benchmark results",
            "",
            "Written by `python -m benchmarks TOPIC`: medians of repeated runs after a warm-up, ours and the",
            "reference side by side in one process. speedup = reference time / our time.",
            "",
            "| date | topic | case | machine | device | ours (s) | reference | reference (s) | speedup | quality |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        q = ", ".join(f"{k}={_fmt(v)}" for k, v in (r.get("quality") or {}).items())
        lines.append(
            f"| {stamp} | {topic} | {r['case']} | {mach} | {r['device']} | {_fmt(r['ours_s'])} | {r['reference']} | "
            f"{_fmt(r.get('reference_s', '—'))} | {_fmt(r.get('speedup', '—'))} | {q} |"
        )
    md.write_text("\n".join(lines) + "\n")
