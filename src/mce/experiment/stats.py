"""Summary statistics over repeated runs: mean, standard deviation, t-based confidence
intervals, and the paired difference of two methods with a paired t-test.

Every function accepts a single value (n = 1): the mean is then that value and the standard
deviation, interval and p-value are NaN (printed as ``n/a``), never an error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "CONFIDENCE",
    "MIN_INTERVAL_N",
    "PairedDifference",
    "Summary",
    "fmt",
    "paired_difference",
    "summarize",
]

CONFIDENCE = 0.95
MIN_INTERVAL_N = 3  # fewer values: a t interval too wide to read (n = 2: +-9 std), not shown


@dataclass(frozen=True)
class Summary:
    """Mean of n values with the sample standard deviation (ddof = 1) and a Student-t interval
    for the mean: ``mean +- t_{(1+confidence)/2, n-1} * std / sqrt(n)``.

    Attributes:
        n: number of values.
        mean: their mean (NaN for n = 0).
        std: sample standard deviation (NaN for n < 2).
        ci_low: lower end of the confidence interval (NaN for n < 2).
        ci_high: upper end of the confidence interval (NaN for n < 2).
        confidence: the interval's confidence level.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN becomes None."""
        return {key: _json_number(value) for key, value in asdict(self).items()}

    def readable(self, low: float = -math.inf, high: float = math.inf) -> Summary:
        """This summary as shown to a reader: the interval clipped to the metric's range
        [``low``, ``high``], and left out (NaN) over fewer than :data:`MIN_INTERVAL_N` values.
        """
        if self.n < MIN_INTERVAL_N:
            return replace(self, ci_low=math.nan, ci_high=math.nan)
        return replace(self, ci_low=max(self.ci_low, low), ci_high=min(self.ci_high, high))

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """``mean ± std [low, high]``, with ``n/a`` where undefined."""
        sign = "+" if signed else ""
        return (
            f"{fmt(self.mean, digits, sign)} ± {fmt(self.std, digits)} "
            f"[{fmt(self.ci_low, digits)}, {fmt(self.ci_high, digits)}]"
        )


@dataclass(frozen=True)
class PairedDifference(Summary):
    """The mean of the paired differences a_i - b_i with its t interval, and the two-sided
    p-value of the paired t-test (``scipy.stats.ttest_rel``) of "mean difference = 0".

    Attributes:
        p_value: NaN for n < 2; for differences that are all equal (zero spread) it is 1.0 when
            they are all 0 and 0.0 otherwise (the t statistic being 0/0 or +-inf).
    """

    p_value: float = math.nan

    def text(self, digits: int = 2, signed: bool = True) -> str:
        """``+diff [low, high], p=...``."""
        return (
            f"{fmt(self.mean, digits, '+' if signed else '')} "
            f"[{fmt(self.ci_low, digits)}, {fmt(self.ci_high, digits)}], "
            f"p={fmt_p(self.p_value)}"
        )


def fmt(value: float, digits: int = 2, sign: str = "") -> str:
    """A number with ``digits`` decimals, or ``n/a`` for NaN / None."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:{sign}.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value: 3 significant digits, ``<0.001`` below that, ``n/a`` for NaN."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError(f"values must be finite numbers, got {values!r}")
    return array


def _interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    if n < 2:
        return math.nan, math.nan
    if std == 0.0:
        return mean, mean
    low, high = scipy_stats.t.interval(confidence, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    return float(low), float(high)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample standard deviation and t-based confidence interval of ``values``.

    Args:
        values: the scores of the repeated runs (any length; n < 2 gives NaN spread).
        confidence: level of the interval, in (0, 1).

    Returns:
        The :class:`Summary`.

    Raises:
        ValueError: a value is not a finite number, or confidence is outside (0, 1).

    Example:
        >>> summarize([1.0, 2.0, 3.0]).text()
        '2.00 ± 1.00 [-0.48, 4.48]'
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = _as_array(values)
    n = int(array.size)
    mean = float(array.mean()) if n else math.nan
    std = float(array.std(ddof=1)) if n >= 2 else math.nan
    low, high = _interval(mean, std, n, confidence)
    return Summary(n, mean, std, low, high, confidence)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """The paired difference ``a - b`` (same seed, same setting in both) with its t interval
    and the two-sided paired t-test p-value.

    Args:
        a: scores of the first method, one per replicate.
        b: scores of the second method on the same replicates, in the same order.
        confidence: level of the interval, in (0, 1).

    Returns:
        The :class:`PairedDifference`.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or hold a non-finite value.
    """
    first, second = _as_array(a), _as_array(b)
    if first.shape != second.shape:
        raise ValueError(f"paired samples differ in length: {first.size} and {second.size}")
    base = summarize(first - second, confidence)
    p_value = math.nan
    if base.n >= 2:
        if base.std == 0.0:
            p_value = 1.0 if base.mean == 0.0 else 0.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p_value = float(scipy_stats.ttest_rel(first, second).pvalue)
    return PairedDifference(**asdict(base), p_value=p_value)
