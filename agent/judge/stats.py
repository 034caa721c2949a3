"""Student's t distribution, the one-sided t-test and a group-sequential boundary, without scipy.

Used twice: to promote a candidate over its parent (agent/judge/acceptance.py: a sequential test whose
promotion boundary `efficacy_boundary` computes) and to show a submission's significance against the
challenge's 0.005-nat rule (agent/results/submit.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel

# The incomplete beta continued fraction: stop when a step changes the value by less than this.
CF_EPSILON = 1e-15
CF_MAX_TERMS = 10_000
CF_TINY = 1e-300  # keeps the Lentz recurrences away from division by zero
# The group-sequential integration: grid points per look, the z beyond which nothing is left, bisection steps.
GRID_POINTS = 81
Z_FAR = 8.0
SOLVER_STEPS = 60
SOLVER_TOLERANCE = 1e-7
SIGMA_NODES = 41  # quadrature over the estimated sigma's sampling distribution (odd: Simpson)


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


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z: the one-sided p-value of a z statistic."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_isf(p: float) -> float:
    """The z with P(Z > z) = p."""
    return statistics.NormalDist().inv_cdf(1.0 - p)


def t_isf(p: float, df: float) -> float:
    """The t with P(T > t) = p for Student's t with df degrees of freedom (df = inf: the normal)."""
    if math.isinf(df):
        return normal_isf(p)
    lo, hi = -1e3, 1e3
    for _ in range(200):  # bisection on the monotone tail: exact to float precision, no scipy
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_sf(mid, df) > p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def crossing_probability(
    information: Sequence[float], lower: Sequence[float], upper: Sequence[float], drift: float = 0.0
) -> float:
    """P(the z statistics of a test observed at `information` reach `upper` at some look before `lower`).

    The z statistic after look k is Z_k = B(I_k) / sqrt(I_k) for a Brownian motion B with the given
    drift (the true effect in the units of 1/sqrt(information)): the joint law of repeated looks at a
    growing sample (Jennison and Turnbull, Group Sequential Methods, ch. 19). A look stops at Z_k >= upper[k]
    (a success) or Z_k <= lower[k]; the density of the z's that carry on is integrated on a grid.
    """
    info = [float(i) for i in information]
    z = np.linspace(max(lower[0], -Z_FAR), min(upper[0], Z_FAR), GRID_POINTS)
    crossed = normal_sf(upper[0] - drift * math.sqrt(info[0]))
    density = np.exp(-0.5 * (z - drift * math.sqrt(info[0])) ** 2) / math.sqrt(2 * math.pi)
    for k in range(1, len(info)):
        if z.size < 2 or z[-1] <= z[0]:
            break  # nothing carries on past the previous look
        weights = density * simpson_weights(z)
        step = info[k] - info[k - 1]
        shift = z * math.sqrt(info[k - 1]) + drift * step  # where B(I_k) is centred, per grid point
        scale = math.sqrt(step)
        tail = np.array([normal_sf((upper[k] * math.sqrt(info[k]) - s) / scale) for s in shift])
        crossed += float(weights @ tail)
        z_next = np.linspace(max(lower[k], -Z_FAR), min(upper[k], Z_FAR), GRID_POINTS)
        b = z_next[:, None] * math.sqrt(info[k]) - shift[None, :]
        kernel = np.exp(-0.5 * (b / scale) ** 2) / (scale * math.sqrt(2 * math.pi)) * math.sqrt(info[k])
        density, z = kernel @ weights, z_next
    return crossed


def simpson_weights(z: np.ndarray) -> np.ndarray:
    """Simpson's rule on an evenly spaced grid with an odd number of points."""
    w = np.ones(z.size)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * (z[1] - z[0]) / 3.0


def sigma_ratio_nodes(dof: float, points: int = SIGMA_NODES) -> list[tuple[float, float]]:
    """Quadrature nodes (s, weight) for s = estimated sigma / true sigma, with s^2 ~ chi^2_dof / dof.
    Evenly spaced in log s, so that the heavy left tail of small dof is covered as well as the peak."""
    half = dof / 2.0
    # From where P(s < lo) ~ 1e-9 (small s: P(s < a) ~ (dof a^2 / 2)^(dof/2) / Gamma(dof/2 + 1)) to 9 sd above 1.
    lo = math.sqrt(2.0 / dof) * math.exp((math.log(1e-9) + math.lgamma(half + 1.0)) / dof)
    x = np.linspace(math.log(max(lo, 1e-12)), math.log(1.0 + 9.0 / math.sqrt(2.0 * dof)), points)
    # the density of log s: 2 (dof/2)^(dof/2) / Gamma(dof/2) * s^dof * exp(-dof s^2 / 2)
    log_pdf = math.log(2.0) + half * math.log(half) - math.lgamma(half) + dof * x - half * np.exp(2 * x)
    weights = np.exp(log_pdf) * simpson_weights(x)
    return list(zip(np.exp(x).tolist(), (weights / weights.sum()).tolist(), strict=True))


@lru_cache(maxsize=1024)
def efficacy_boundary(
    information: tuple[float, ...],
    futility: tuple[float, ...],
    alpha: float,
    first_look: int = 0,
    dof: float = math.inf,
) -> float:
    """The constant boundary c (Pocock's shape) that a test with no true effect crosses with probability
    exactly `alpha`: success at look k >= first_look when the statistic >= c, a stop when <= futility[k].

    With `dof` infinite the statistic is Z_k (known sigma). With `dof` finite it is T_k = Z_k / s, the
    same with a sigma estimated on dof degrees of freedom that every look shares; `futility` is then on
    T's scale, and the crossing probability is averaged over s's sampling distribution, so the
    shared error in sigma is accounted for, not only each look's own t tail.
    """
    if not information:
        raise ValueError("a sequential test needs at least one look")
    looks = len(information) - first_look
    if looks < 1:
        raise ValueError(f"first_look {first_look} is past the last of {len(information)} looks")
    nodes = [(1.0, 1.0)] if math.isinf(dof) else sigma_ratio_nodes(dof)

    def alpha_at(c: float) -> float:
        upper = [math.inf if k < first_look else c for k in range(len(information))]
        lower = [min(f, u) for f, u in zip(futility, upper, strict=True)]
        lower[-1] = upper[-1]  # the last look stops whatever it shows
        return sum(
            w * crossing_probability(information, [x * s for x in lower], [x * s for x in upper])
            for s, w in nodes
        )

    # log alpha_at(c) falls smoothly in c: regula falsi (Illinois) from the bracket [one look at
    # alpha, Bonferroni] converges in a few steps.
    lo, hi = t_isf(alpha, dof), t_isf(alpha / looks, dof)
    f_lo, f_hi = math.log(alpha_at(lo) / alpha), math.log(alpha_at(hi) / alpha)
    if f_lo <= 0:
        return lo
    side = 0
    for _ in range(SOLVER_STEPS):
        c = hi - f_hi * (hi - lo) / (f_hi - f_lo) if f_hi != f_lo else 0.5 * (lo + hi)
        f_c = math.log(alpha_at(c) / alpha)
        if abs(f_c) < SOLVER_TOLERANCE or hi - lo < SOLVER_TOLERANCE:
            return c
        if f_c > 0:
            lo, f_lo = c, f_c
            f_hi, side = (f_hi / 2, side) if side == 1 else (f_hi, 1)
        else:
            hi, f_hi = c, f_c
            f_lo, side = (f_lo / 2, side) if side == -1 else (f_lo, -1)
    return hi
