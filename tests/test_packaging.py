"""pyproject.toml, environment.yml, tasks.py and .ci/run agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"python-igraph": "igraph", "matplotlib-base": "matplotlib"}


def _pyproject_reqs() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + list(meta["optional-dependencies"]["dev"])
    out = {}
    for r in reqs:
        req = Requirement(r)
        out[req.name.lower()] = str(req.specifier)
    return out


def _environment_reqs() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e") or item in ("pip",) or item.startswith("python="):
                continue
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", item)
            name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
            out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py, env = _pyproject_reqs(), _environment_reqs()
    assert set(py) == set(env), (
        f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    )


def test_environment_yml_uses_the_same_version_ranges():
    py, env = _pyproject_reqs(), _environment_reqs()
    for name, spec in py.items():
        assert sorted(spec.split(",")) == sorted(env[name].split(",")), (
            f"{name}: pyproject {spec!r} vs environment.yml {env[name]!r}"
        )


def test_torch_pin_admits_the_installed_wheel():
    from packaging.specifiers import SpecifierSet

    tasks = (ROOT / "tasks.py").read_text()
    pinned = re.search(r'TORCH = "torch==([0-9.]+)"', tasks).group(1)
    assert pinned == "2.13.0"
    assert pinned in SpecifierSet(_pyproject_reqs()["torch"])


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert blocks, "README must open with a code block holding the two commands"
    commands = [ln.strip() for ln in blocks[0].splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(commands) == 2, f"the first README code block must hold exactly two commands, found {commands}"
    assert "course" in commands[0] and "test" in commands[1]
    assert commands[1] in ci, f".ci/run must call the README test command {commands[1]!r}"
    assert "SCCOURSE_DATA_MIRROR" in ci


def _lock() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[-1].strip())
    out = {}
    for b in blocks:
        head = b.split("\n")[0]
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", head)
        if m:
            assert "--hash=sha256:" in b, f"{m.group(1)} has no hash in requirements.lock"
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_lock_pins_every_dependency_within_pyproject_ranges_with_hashes():
    from packaging.specifiers import SpecifierSet

    locked = _lock()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for r in list(meta["dependencies"]) + list(meta["optional-dependencies"]["dev"]):
        req = Requirement(r)
        name = req.name.lower().replace("_", "-")
        if name == "torch":  # installed first by tasks.py, never from the lock
            assert "torch" not in locked
            continue
        assert name in locked, (
            f"{name} (pyproject.toml) is missing from requirements.lock: run `python3 tasks.py lock`"
        )
        assert locked[name] in SpecifierSet(str(req.specifier)), (
            f"requirements.lock pins {name}=={locked[name]} outside pyproject's {req.specifier}"
        )
    assert not any(n.startswith(("nvidia-", "triton", "cuda-")) for n in locked), (
        "CUDA-only packages in the lock"
    )


def test_setup_installs_from_the_lock():
    tasks = (ROOT / "tasks.py").read_text()
    assert '"--require-hashes", "-r", str(LOCK)' in tasks and '"--no-deps", "-e", "."' in tasks
