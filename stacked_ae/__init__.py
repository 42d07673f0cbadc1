"""stacked-ae: greedy layer-wise autoencoder pretraining, with an honest comparison to random init.

    from stacked_ae import load_dataset, greedy_pretrain, PretrainConfig, fit_classifier, TrainConfig
"""
__version__ = "0.1.0"

from .data import DataFormatError, DataNotFoundError, Dataset, load_dataset  # noqa: E402
from .layers import AutoencoderLayer  # noqa: E402
from .model import CheckpointError, Classifier, DeepAutoencoder, StackedEncoder  # noqa: E402
from .pretrain import PretrainConfig, greedy_pretrain  # noqa: E402
from .train import (  # noqa: E402
    TrainConfig,
    TrainingDiverged,
    evaluate_classifier,
    evaluate_reconstruction,
    fit_autoencoder,
    fit_classifier,
)

__all__ = [
    "AutoencoderLayer", "CheckpointError", "Classifier", "DataFormatError", "DataNotFoundError", "Dataset",
    "DeepAutoencoder", "PretrainConfig", "StackedEncoder", "TrainConfig", "TrainingDiverged",
    "evaluate_classifier", "evaluate_reconstruction", "fit_autoencoder", "fit_classifier",
    "greedy_pretrain", "load_dataset", "__version__",
]


def __getattr__(name):
    # The scikit-learn estimators load on first use, so `import stacked_ae` stays light.
    if name in ("StackedAutoencoderTransformer", "StackedAutoencoderClassifier"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'stacked_ae' has no attribute {name!r}")
