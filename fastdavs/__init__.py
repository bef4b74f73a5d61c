"""fastdavs: a fast re-implementation of DAVS talking-face generation (AAAI 2019)."""

from fastdavs.config import ConfigError, DavsConfig, LossWeights, OptimConfig, ScheduleConfig

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DavsConfig",
    "LossWeights",
    "OptimConfig",
    "ScheduleConfig",
    "__version__",
]
