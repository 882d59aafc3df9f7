"""The compiled extremes of a float64 column are NumPy's min and max, and refuse a column with NaN or ±inf."""
from __future__ import annotations

import numpy as np
import pytest

from arrival_core import extreme_kernels


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 1001])
def test_extremes_are_numpys_min_and_max_at_every_length_and_position(n):
    rng = np.random.default_rng(n)  # fixed key
    values = rng.normal(0.0, 10.0, n)
    assert extreme_kernels.extremes(values) == (values.min(), values.max())
    for at in {0, n // 2, n - 1}:  # the extremes in each lane and in the tail the lanes leave
        placed = values.copy()
        placed[at] = -1e300
        assert extreme_kernels.extremes(placed) == (-1e300, placed.max())
        placed[at] = 1e300
        assert extreme_kernels.extremes(placed) == (placed.min(), 1e300)
    assert extreme_kernels.extremes(values[::-1]) == (values.min(), values.max())  # a strided view


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_extremes_are_none_for_a_column_holding_a_non_finite_value(bad):
    for at in (0, 5, 9):
        values = np.arange(10, dtype=np.float64)
        values[at] = bad
        assert extreme_kernels.extremes(values) is None


def test_extremes_take_only_non_empty_float64():
    for values in (np.zeros(0), np.zeros(3, dtype=np.int64)):
        with pytest.raises(ValueError):
            extreme_kernels.extremes(values)
