"""The library: datasets, autoencoder layers, training loops, greedy pretraining and stacked models.

Imports nothing else of the package; `pipeline`, `report` and the entry points build on it.
"""
