"""Running experiments: the pipeline config, the stage graph of seeds x label budgets x arms, how each
arm trains, and the run folder that records every stage atomically.

Imports `core` only; never `report` or the entry points.
"""
