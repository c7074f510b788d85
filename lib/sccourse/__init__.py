"""sccourse: the shared, tested library behind the single-cell unsupervised-learning course."""

from ._device import get_device, set_seed

__version__ = "0.1.0"

__all__ = ["get_device", "set_seed", "__version__"]
