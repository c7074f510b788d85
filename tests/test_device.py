"""get_device / set_seed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sccourse import get_device, set_seed


def test_auto_resolves_to_cuda_exactly_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device("auto").type == expected
    assert get_device(None).type == expected


def test_explicit_devices():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")
    assert get_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "tpu", "", "cuda:x", 3])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="device"):
        get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-CUDA message")
def test_cuda_without_cuda_says_so():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")


@pytest.mark.gpu
def test_cuda_device_when_present():
    assert get_device("cuda").type == "cuda"
    assert get_device("auto").type == "cuda"


def test_set_seed_makes_python_numpy_and_torch_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()  # noqa: NPY002

    set_seed(123)
    a = draw()
    set_seed(123)
    b = draw()
    set_seed(124)
    c = draw()
    assert a == b
    assert a != c
    rng1, rng2 = set_seed(5), set_seed(5)
    assert rng1.random() == rng2.random()


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_set_seed_rejects_non_integers(bad):
    with pytest.raises(ValueError, match="seed"):
        set_seed(bad)


def test_import_sccourse_gives_the_topic_modules_lazily():
    import subprocess
    import sys

    code = (
        "import sys, sccourse; assert 'sccourse.etm' not in sys.modules; "
        "assert sccourse.etm.ETM and 'sccourse.etm' in sys.modules; "
        "assert {'datasets', 'nmf', 'ee', 'simulate', 'manifold', 'qc', 'metrics', 'plotting'} <= set(dir(sccourse))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    import sccourse

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sccourse.nope  # noqa: B018


def test_seeded_is_local_and_repeatable():
    from sccourse._device import seeded

    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    with seeded(3):
        a = torch.rand(4)
    assert torch.equal(torch.random.get_rng_state(), before), "the caller's generator is restored"
    with seeded(3):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert torch.equal(a, torch.rand(4, generator=torch.Generator().manual_seed(3)))


@pytest.mark.gpu
def test_seeded_leaves_every_gpu_generator_alone():
    from sccourse._device import seeded

    states = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    with seeded(3, "cuda:0"):
        torch.rand(4, device="cuda:0")
    for i, state in enumerate(states):
        assert torch.equal(torch.cuda.get_rng_state(i), state), f"cuda:{i} generator changed"
