"""The GPU run (`python -m benchmarks gpu`) rehearsed on the CPU, so that it works the day a device is lent."""

from __future__ import annotations

import json
import subprocess
import sys

from coursetools.course import ROOT


def test_gpu_script_dry_run_on_cpu():
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads((ROOT / "benchmarks" / "results" / "gpu-dry-run.json").read_text())
    assert (
        out["dry_run"]
        and "download.pytorch.org/whl/cu126" in out["command"]
        and "torch==2.13.0" in out["command"]
    )
    assert out["collected"] and out["collected"] >= 5, "the GPU tests were not collected"
    assert [r for r in out["rows"] if "NeuralEE end to end" in r["case"]], "the scaling row did not run"
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before, "a dry run must not write RESULTS.md"
