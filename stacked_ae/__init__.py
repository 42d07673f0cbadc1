"""stacked-ae: greedy layer-wise autoencoder pretraining, with an honest comparison to random init.

    from stacked_ae import load_dataset, greedy_pretrain, PretrainConfig, fit_classifier, TrainConfig
"""
from .core.conv import ConvAutoencoderLayer, ConvSpec
from .core.data import DataFormatError, DataNotFoundError, Dataset, load_dataset
from .core.layers import AutoencoderLayer
from .core.model import CheckpointError, Classifier, DeepAutoencoder, StackedEncoder
from .core.pretrain import greedy_pretrain
from .core.pretrain_config import PretrainConfig
from .core.train import (
    TrainConfig,
    TrainingCheckpoint,
    TrainingDiverged,
    evaluate_classifier,
    evaluate_reconstruction,
    fit_autoencoder,
    fit_classifier,
)
from .core.version import __version__

__all__ = [
    "AutoencoderLayer", "CheckpointError", "Classifier", "ConvAutoencoderLayer", "ConvSpec",
    "DataFormatError", "DataNotFoundError", "Dataset",
    "DeepAutoencoder", "PretrainConfig", "StackedEncoder", "TrainConfig", "TrainingCheckpoint",
    "TrainingDiverged",
    "evaluate_classifier", "evaluate_reconstruction", "fit_autoencoder", "fit_classifier",
    "greedy_pretrain", "load_dataset", "__version__",
]


def __getattr__(name):
    # The scikit-learn estimators load on first use, so `import stacked_ae` stays light.
    if name in ("StackedAutoencoderTransformer", "StackedAutoencoderClassifier"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'stacked_ae' has no attribute {name!r}")
