"""BG/NBD and Gamma-Gamma: likelihoods, maximum-likelihood fits and predictions (NumPy and SciPy).

The models are those of Fader, Hardie and Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model" (BG/NBD: purchases while alive, Poisson with a gamma(r, alpha)
rate; after each purchase the customer drops out with probability p, beta(a, b) across customers) and
Fader and Hardie (2013), "The Gamma-Gamma model of monetary value" (the mean spend of a customer's
repeat purchases, gamma(p, nu) per customer with nu ~ gamma(q, gamma)). The formulas follow
lifetimes' ``BetaGeoFitter`` and ``GammaGammaFitter`` (the same log-likelihoods, the same penalty), so
the same data gives the same parameters.

Both fits run on *distinct* inputs with counts as weights, and the terms that depend only on the
frequency are computed once per distinct frequency: the work grows with the number of distinct
(frequency, recency, T) tuples, which is bounded by the calendar, not with the number of customers.
The gradients are analytic; the standard errors come from the Hessian of the negative log-likelihood
in log-parameters (central differences of the gradient), by the delta method, as lifetimes does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

__all__ = ["Fit", "FitError", "Histories", "fit_bgnbd", "fit_gamma_gamma", "p_alive", "expected_purchases",
           "expected_average_value", "discounted_value", "MONTH"]

#: Periods per month in lifetimes' ``customer_lifetime_value`` (its ``factor``): 30 days, 4.345 weeks.
MONTH = {"days": 30.0, "weeks": 4.345}


class FitError(ValueError):
    """The data cannot be fitted (too few repeat buyers, no convergence, a degenerate optimum)."""


@dataclass(frozen=True)
class Fit:
    """Fitted parameters (by name), their standard errors, and how the fit went."""

    params: dict[str, float]
    standard_errors: dict[str, float | None]
    log_likelihood: float
    iterations: int
    customers: int
    distinct_inputs: int
    #: the optimiser's inverse Hessian estimate (log-parameters): a warm start's curvature
    hess_inv: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"params": self.params, "standard_errors": self.standard_errors,
                "log_likelihood": self.log_likelihood, "iterations": self.iterations,
                "customers": self.customers, "distinct_inputs": self.distinct_inputs}


def _minimize(objective, x0, names, what, penalizer, hess_inv=None) -> tuple[np.ndarray, float, int, np.ndarray]:
    options = {"gtol": 1e-8, "maxiter": 1000}
    if hess_inv is not None:  # from the subsample's fit: the objective is a mean, its curvature alike
        hess_inv = (hess_inv + hess_inv.T) / 2
        if np.all(np.isfinite(hess_inv)) and np.all(np.linalg.eigvalsh(hess_inv) > 0):
            options["hess_inv0"] = hess_inv
    result = minimize(objective, x0, jac=True, method="BFGS", options=options)
    # BFGS may stop with a precision-loss status at an optimum it cannot improve on; accept it only
    # when the gradient is in fact (near) zero.
    grad = objective(result.x)[1]
    if not np.all(np.isfinite(result.x)) or not (result.success or np.max(np.abs(grad)) < 1e-5):
        raise FitError(f"the {what} fit did not converge ({result.message}; after {result.nit} iterations, "
                       f"penalizer {penalizer}); a larger penalizer (e.g. 0.001) may help")
    # Parameters beyond 1e-6 .. 1e6 (alpha in the rescaled time) are the optimiser running off along a
    # ridge where the likelihood keeps improving: no finite optimum, no meaningful predictions.
    if np.any(np.abs(result.x) > np.log(1e6)):
        values = ", ".join(f"{n} {v:.3g}" for n, v in zip(names, np.exp(result.x)))
        raise FitError(f"the {what} fit ran off to a degenerate optimum ({values}); the data does not identify "
                       f"the model; a penalizer (e.g. 0.001) keeps the parameters finite")
    return result.x, float(result.fun), int(result.nit), result.hess_inv


def _standard_errors(objective, x, names, total_weight) -> dict[str, float | None]:
    """Delta-method standard errors from the Hessian of the total negative log-likelihood in log-parameters."""
    k = len(x)
    h = np.empty((k, k))
    for i in range(k):
        step = 1e-5 * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        h[:, i] = (objective(up)[1] - objective(down)[1]) / (2 * step)
    h = (h + h.T) / 2 * total_weight  # the objective is a mean over the customers
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return dict.fromkeys(names)
    diag = np.diag(cov)
    params = np.exp(x)
    return {n: (float(p * np.sqrt(d)) if d > 0 and np.isfinite(d) else None)
            for n, p, d in zip(names, params, diag)}


# ----------------------------------------------------------------------------- BG/NBD
def _subsample(n: int, size: int = 20_000) -> np.ndarray | None:
    """A fixed pseudo-random subset of ``size`` of ``n`` inputs for a warm start (None when n is small)."""
    if n <= 4 * size:
        return None
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def fit_bgnbd(x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray, *, penalizer: float = 0.0,
              _start: np.ndarray | None = None) -> Fit:
    """Fit BG/NBD to distinct (frequency ``x``, recency ``tx``, age ``T``) with ``w`` customers each.

    The objective is lifetimes': the mean negative log-likelihood per customer plus
    ``penalizer * (r^2 + (alpha*s)^2 + a^2 + b^2)``, optimised over log-parameters with alpha
    rescaled by ``s = 10 / max(T)``. With many distinct inputs the optimiser starts from a fit on a
    fixed subsample (the same optimum, fewer passes over all of them). The logarithms of
    ``alpha + T`` and ``alpha + tx`` are taken once per distinct T and tx (the calendar bounds them)
    and gathered.
    """
    x, tx, T, w = (np.ascontiguousarray(v, dtype=float) for v in (x, tx, T, w))
    scale = 10.0 / T.max()
    W = w.sum()
    xs, inverse = np.unique(x, return_inverse=True)  # per distinct frequency: the gamma-function terms
    wx = np.bincount(inverse, weights=w)
    rep = x > 0
    xr, wr = x[rep], w[rep]
    uT, iT = np.unique(T[rep] * scale, return_inverse=True)
    utx, itx = np.unique(tx[rep] * scale, return_inverse=True)
    T0, w0 = T[~rep] * scale, w[~rep]

    def objective(theta):
        r, alpha, a, b = np.exp(theta)
        # terms of each distinct frequency
        A1 = gammaln(r + xs) - gammaln(r) + r * np.log(alpha)
        A2 = gammaln(a + b) + gammaln(b + xs) - gammaln(b) - gammaln(a + b + xs)
        ll = np.dot(wx, A1 + A2)
        d_r = np.dot(wx, digamma(r + xs) - digamma(r) + np.log(alpha))
        d_alpha = r / alpha * W
        d_a = np.dot(wx, digamma(a + b) - digamma(a + b + xs))
        d_b = np.dot(wx, digamma(a + b) + digamma(b + xs) - digamma(b) - digamma(a + b + xs))
        # one purchase only: A3 = -r log(alpha + T)
        L0 = np.log(alpha + T0)
        ll -= r * np.dot(w0, L0)
        d_r -= np.dot(w0, L0)
        d_alpha -= r * np.dot(w0, 1 / (alpha + T0))
        # repeat buyers: log(exp(A3) + exp(A4)) = A3 + log1p(exp(A4 - A3))
        L, M = np.log(alpha + uT)[iT], np.log(alpha + utx)[itx]
        rx = r + xr
        bx = np.log(b + xr - 1)
        diff = np.log(a) - bx + rx * (L - M)  # A4 - A3
        e = np.exp(-np.abs(diff))
        ll += np.dot(wr, -rx * L + np.maximum(diff, 0) + np.log1p(e))
        s4 = np.where(diff >= 0, 1 / (1 + e), e / (1 + e))  # share of the second term
        ws4 = wr * s4
        d_r -= np.dot(wr, L) - np.dot(ws4, L - M)
        inv_T, inv_tx = (1 / (alpha + uT))[iT], (1 / (alpha + utx))[itx]
        d_alpha -= np.dot(wr * rx, inv_T) - np.dot(ws4 * rx, inv_T - inv_tx)
        d_a += ws4.sum() / a
        d_b -= np.dot(ws4, 1 / (b + xr - 1))
        params = np.array([r, alpha, a, b])
        value = -ll / W + penalizer * np.sum(params ** 2)
        grad = -np.array([d_r, d_alpha, d_a, d_b]) / W + 2 * penalizer * params
        return value, grad * params  # d/d(log theta)

    names = ["r", "alpha", "a", "b"]
    start = np.full(4, 0.1) if _start is None else _start
    sub = _subsample(x.size) if _start is None else None
    hess_inv = None
    if sub is not None:
        try:
            warm = fit_bgnbd(x[sub], tx[sub], T[sub], w[sub], penalizer=penalizer, _start=start)
            p = warm.params
            start, hess_inv = np.log([p["r"], p["alpha"] * scale, p["a"], p["b"]]), warm.hess_inv
        except FitError:  # the subsample says nothing: start from the default
            pass
    theta, fun, nit, h_inv = _minimize(objective, start, ["r", "alpha x 10/max(T)", "a", "b"], "BG/NBD",
                                       penalizer, hess_inv)
    r, alpha, a, b = np.exp(theta)
    ses = _standard_errors(objective, theta, names, W) if _start is None else dict.fromkeys(names)
    if ses["alpha"] is not None:
        ses["alpha"] = float(ses["alpha"] / scale)
    return Fit({"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}, ses,
               float(-(fun - penalizer * np.sum(np.exp(theta) ** 2)) * W), nit, int(W), int(x.size), h_inv)


def p_alive(params: dict, x, tx, T):
    """P(alive | x, tx, T) (Fader, Hardie and Lee 2008, note 021); 1 for a customer with one purchase."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    log_div = (r + x) * np.log((alpha + T) / (alpha + tx)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


class Histories:
    """Customers' (frequency ``x``, recency ``tx``, age ``T``), with the distinct (x, T) pairs found once:
    the hypergeometric term of the predictions depends on those only, so it is computed per pair."""

    def __init__(self, x, tx, T):
        self.x, self.tx, self.T = (np.asarray(v, dtype=float) for v in (x, tx, T))
        if self.x.size:
            key = np.rint(self.x) * (np.rint(self.T.max() * 1e6) + 1) + np.rint(self.T * 1e6)
            _, first, self.inverse = np.unique(key, return_index=True, return_inverse=True)
            self.ux, self.uT = self.x[first], self.T[first]
        else:
            self.inverse = np.zeros(0, dtype=np.intp)
            self.ux = self.uT = np.zeros(0)


def _log_hyp(params: dict, h: Histories, t: float):
    """log 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t)) per distinct (x, T) pair."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    _a, _b, _c = r + h.ux, b + h.ux, a + b + h.ux - 1
    z = t / (alpha + h.uT + t)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = np.log(hyp2f1(_a, _b, _c, z))
        bad = ~np.isfinite(out)
        if bad.any():  # Euler's transformation, as lifetimes falls back to
            out[bad] = (np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log1p(-z))[bad]
    return out[h.inverse]


def expected_purchases(params: dict, t: float, h: Histories):
    """E[Y(t) | x, tx, T]: expected purchases in the next ``t`` periods (lifetimes' ``predict``)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T = h.x, h.tx, h.T
    if t <= 0:
        return np.zeros_like(x)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp(_log_hyp(params, h, t) + (r + x) * np.log((alpha + T) / (alpha + t + T)))
    denominator = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + T) / (alpha + tx)) ** (r + x)
    return first * second / denominator


def discounted_value(params: dict, months: int, monthly_rate: float, unit: str, h: Histories, value):
    """lifetimes' ``customer_lifetime_value``: sum over months m = 1..H of
    ``value * (E[Y(m*f)] - E[Y((m-1)*f)]) / (1 + d)^m`` with f periods per month (:data:`MONTH`)."""
    f = MONTH[unit]
    total = np.zeros_like(h.x)
    before = np.zeros_like(h.x)
    for m in range(1, months + 1):
        now = expected_purchases(params, m * f, h)
        total += value * (now - before) / (1 + monthly_rate) ** m
        before = now
    return total


# ------------------------------------------------------------------------ Gamma-Gamma
def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, w: np.ndarray, *, penalizer: float = 0.0,
                    _start: np.ndarray | None = None) -> Fit:
    """Fit Gamma-Gamma to repeat buyers' (frequency ``x`` > 0, mean repeat spend ``m`` > 0), ``w`` each.

    Objective as lifetimes': mean negative log-likelihood plus ``penalizer * (p^2 + q^2 + v^2)``;
    warm-started from a fixed subsample when there are many inputs, as :func:`fit_bgnbd`.
    """
    x, m, w = (np.ascontiguousarray(v, dtype=float) for v in (x, m, w))
    W = w.sum()
    xs, inverse = np.unique(x, return_inverse=True)
    wx = np.bincount(inverse, weights=w)
    logm = np.log(m)
    c_xlogm, c_logm = np.dot(w, x * logm), np.dot(w, logm)
    c_xlogx = np.dot(wx, xs * np.log(xs))

    def objective(theta):
        p, q, v = np.exp(theta)
        px = p * xs
        lxv = np.log(x * m + v)
        ll = (np.dot(wx, gammaln(px + q) - gammaln(px) - gammaln(q)) + W * q * np.log(v)
              + p * c_xlogm - c_logm + p * c_xlogx - np.dot(w, (p * x + q) * lxv))
        d_p = (np.dot(wx, xs * (digamma(px + q) - digamma(px))) + c_xlogm + c_xlogx - np.dot(w, x * lxv))
        d_q = np.dot(wx, digamma(px + q) - digamma(q)) + W * np.log(v) - np.dot(w, lxv)
        d_v = W * q / v - np.dot(w, (p * x + q) / (x * m + v))
        params = np.array([p, q, v])
        value = -ll / W + penalizer * np.sum(params ** 2)
        grad = -np.array([d_p, d_q, d_v]) / W + 2 * penalizer * params
        return value, grad * params

    names = ["p", "q", "v"]
    start = np.full(3, 0.1) if _start is None else _start
    sub = _subsample(x.size) if _start is None else None
    hess_inv = None
    if sub is not None:
        try:
            warm = fit_gamma_gamma(x[sub], m[sub], w[sub], penalizer=penalizer, _start=start)
            start, hess_inv = np.log([warm.params[k] for k in names]), warm.hess_inv
        except FitError:
            pass
    theta, fun, nit, h_inv = _minimize(objective, start, names, "Gamma-Gamma", penalizer, hess_inv)
    ses = _standard_errors(objective, theta, names, W) if _start is None else dict.fromkeys(names)
    p, q, v = (float(z) for z in np.exp(theta))
    return Fit({"p": p, "q": q, "v": v}, ses, float(-(fun - penalizer * (p * p + q * q + v * v)) * W),
               nit, int(W), int(x.size), h_inv)


def expected_average_value(params: dict, x, m):
    """E[M | x, m]: the expected mean spend of a customer's future purchases (lifetimes'
    ``conditional_expected_average_profit``); the population mean ``p v / (q - 1)`` for x = 0."""
    p, q, v = (params[k] for k in ("p", "q", "v"))
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weight = p * x / (p * x + q - 1)
    return (1 - weight) * (v * p / (q - 1)) + weight * np.where(x > 0, m, 0.0)
