"""Training for the five methods: data, curation, losses, trainers and the configuration schema.

>>> import xcloudfree as xcf
>>> path = xcf.training.train("config.yaml")            # → the final safetensors checkpoint
"""

from .config import METHOD_DEFAULTS, TrainConfig, load_config
from .trainers import AdversarialTrainer, CycleTrainer, SupervisedTrainer, Trainer, make_trainer, train

__all__ = [
    "METHOD_DEFAULTS",
    "AdversarialTrainer",
    "CycleTrainer",
    "SupervisedTrainer",
    "TrainConfig",
    "Trainer",
    "load_config",
    "make_trainer",
    "train",
]
