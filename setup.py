"""Installs stacked-ae: `pip install -e .` (library and `sae` CLI), `pip install -e .[dev]` (tests, lint)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("stacked_ae/core/version.py").read_text()).group(1)

setup(
    name="stacked-ae",
    version=version,
    description="Greedy layer-wise autoencoder pretraining with an honest comparison to random initialisation",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["stacked_ae", "stacked_ae.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.4",           # fused Adam and SGD on CPU (train.make_optimizer)
        "torchvision>=0.19",    # the release paired with torch 2.4
        "numpy>=1.24",
        "scikit-learn>=1.6",    # validate_data and __sklearn_tags__ (estimators.py)
        "pandas>=2.0",
        "matplotlib>=3.7",
        "scipy>=1.10",
        "tqdm>=4.60",
        "threadpoolctl>=3.1",   # one BLAS thread for the scikit-learn baselines (pipeline/arms.py)
        "pyarrow>=12",          # .parquet input and output
    ],
    extras_require={
        "ray": ["ray>=2.9"],
        "dev": ["pytest>=7", "hypothesis>=6.80", "ruff>=0.4", "joblib>=1.2", "ray>=2.9"],
    },
    entry_points={"console_scripts": ["sae=stacked_ae.cli:main"]},
    license="MIT",
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
