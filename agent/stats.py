"""Student's t distribution and the one-sided t-test, with the standard library only (no scipy).

Used twice: to promote a candidate over its parent (agent/acceptance.py) and to show a submission's
significance against the challenge's 0.005-nat rule (agent/submit.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pydantic import BaseModel

# The incomplete beta continued fraction: stop when a step changes the value by less than this.
CF_EPSILON = 1e-15
CF_MAX_TERMS = 10_000
CF_TINY = 1e-300  # keeps the Lentz recurrences away from division by zero


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"regularized_beta needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    # The continued fraction converges fast below the mean of the distribution; use symmetry above it.
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    return math.exp(log_front) / (a * _beta_continued_fraction(x, a, b))


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """1 + d1/(1 + d2/(1 + ...)) for the incomplete beta function, by the modified Lentz method."""

    def term(j: int) -> float:
        m = j // 2
        if j % 2:  # odd terms: d_{2m+1}
            return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))

    value, c, d = 1.0, 1.0, 0.0
    for j in range(1, CF_MAX_TERMS):
        dj = term(j)
        d = 1.0 + dj * d
        d = 1.0 / (d if abs(d) > CF_TINY else CF_TINY)
        c = 1.0 + dj / c
        c = c if abs(c) > CF_TINY else CF_TINY
        step = c * d
        value *= step
        if abs(step - 1.0) < CF_EPSILON:
            return value
    raise ArithmeticError(f"incomplete beta did not converge for x={x}, a={a}, b={b}")


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom: the one-sided p-value of a t statistic."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)  # P(T > |t|)
    return tail if t > 0 else 1.0 - tail


class TTest(BaseModel):
    """One-sided one-sample t-test of H1: mean(scores) < target."""

    target_bpb: float
    t_statistic: float
    df: int
    p_value: float


def one_sided_t_test(scores: Sequence[float], target_bpb: float) -> TTest | None:
    """None when it cannot be computed: fewer than two scores, or scores with no spread."""
    if len(scores) < 2:
        return None
    sd = statistics.stdev(scores)
    if sd == 0.0:
        return None
    t = (target_bpb - statistics.fmean(scores)) / (sd / math.sqrt(len(scores)))
    df = len(scores) - 1
    return TTest(target_bpb=target_bpb, t_statistic=t, df=df, p_value=student_t_sf(t, df))
