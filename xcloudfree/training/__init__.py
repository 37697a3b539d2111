"""Training for the five methods: data, curation, losses, trainers and the configuration schema.

``config`` validates a configuration, ``data`` builds what a trainer trains on (:class:`~.data.TrainingData`),
``trainers`` runs the loop on the device and precision of :mod:`xcloudfree.inference.runtime`. From a YAML file::

    path = xcf.training.train("config.yaml")            # → the final safetensors checkpoint

>>> import xcloudfree as xcf
>>> cfg = xcf.training.load_config({"model": {"name": "dsen2cr"}})
>>> cfg.trainer, cfg.loss.name, cfg.optimizer.name, cfg.optimizer.lr
('supervised', 'carl', 'nadam', 7e-05)
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
