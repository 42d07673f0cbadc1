"""The package version, recorded in checkpoints, run manifests and stage records."""
__version__ = "0.2.0"
