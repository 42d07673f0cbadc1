"""Argument checks shared by the library's entry points: each error names the argument and what it expects.

Integers may be Python's or NumPy's (a grid built with `np.arange` is a list of `np.int64`); bools are
refused where a count is expected. Checked values come back as Python numbers.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def is_int(value) -> bool:
    """An integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A real number (int or float, Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value) -> int:
    """`value` as an int >= 1, or ValueError naming `name`."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def finite_real(name: str, value) -> float:
    """`value` as a finite float, or ValueError naming `name`."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
