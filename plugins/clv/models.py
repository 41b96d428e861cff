"""BG/NBD and Gamma-Gamma: likelihoods, maximum-likelihood fits and predictions (NumPy and SciPy).

The models are those of Fader, Hardie and Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model" (BG/NBD: purchases while alive, Poisson with a gamma(r, alpha)
rate; after each purchase the customer drops out with probability p, beta(a, b) across customers) and
Fader and Hardie (2013), "The Gamma-Gamma model of monetary value" (the mean spend of a customer's
repeat purchases, gamma(p, nu) per customer with nu ~ gamma(q, gamma)). The formulas follow
lifetimes' ``BetaGeoFitter`` and ``GammaGammaFitter`` (the same log-likelihoods, the same penalty), so
the same data gives the same parameters.

The fits take inputs with counts as weights: BG/NBD is fitted on the *distinct* (frequency, recency,
T) tuples, and the terms that depend only on the frequency are computed once per distinct frequency,
so its work grows with the number of distinct tuples, which the calendar bounds, not with the number
of customers. (Gamma-Gamma's (frequency, mean spend) pairs are nearly all distinct: the plugin fits it
on the repeat buyers one by one.) The gradients and Hessians are analytic. With many inputs a fit
starts on a fixed subsample (Newton's method, damped) and finishes on all inputs by Newton's method, a few passes over
them; the standard errors come from the analytic Hessian of the negative log-likelihood in
log-parameters at the optimum, by the delta method, as lifetimes does (it differentiates numerically).

The predictions factor as ``E[Y(t)] = P(alive) G(x, T, t)``: everything that needs the hypergeometric
function (each month of the CLV's discounted sum included) is computed once per distinct (x, T) pair
and gathered back to the customers (:class:`Histories`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln, hyp2f1, polygamma

__all__ = ["Fit", "FitError", "Histories", "fit_bgnbd", "fit_gamma_gamma", "p_alive", "expected_purchases",
           "expected_average_value", "discounted_value", "discount_factors", "growth", "horizon_and_discount_factors",
           "MONTH"]

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

    def to_dict(self) -> dict:
        return {"params": self.params, "standard_errors": self.standard_errors,
                "log_likelihood": self.log_likelihood, "iterations": self.iterations,
                "customers": self.customers, "distinct_inputs": self.distinct_inputs}


@dataclass(frozen=True)
class _Result:
    x: np.ndarray
    fun: float
    jac: np.ndarray
    nit: int
    success: bool
    message: str


def _minimize(evaluate, x0, names, what, penalizer, *, newton: bool = False) -> tuple[np.ndarray, float, int, None]:
    """Minimise ``evaluate(theta, hessian) -> (value, gradient[, Hessian])`` over log-parameters.

    From a cold start, Newton's method damped as Levenberg and Marquardt's (robust far from the optimum,
    where the Hessian need not be positive definite); with ``newton``, plain Newton's method from a warm
    start near the optimum (a few evaluations, each a pass over the inputs). Both use the analytic
    Hessian; neither needs SciPy's optimisers (whose import costs a run more than the fit).
    """
    result = _newton(evaluate, x0) if newton else _damped_newton(evaluate, x0)
    # Parameters beyond 1e-6 .. 1e6 (alpha in the rescaled time) are the optimiser running off along a
    # ridge where the likelihood keeps improving: no finite optimum, no meaningful predictions (whether it
    # stopped there or was still going).
    if np.all(np.isfinite(result.x)) and np.any(np.abs(result.x) > np.log(1e6)):
        values = ", ".join(f"{n} {v:.3g}" for n, v in zip(names, np.exp(result.x)))
        raise FitError(f"the {what} fit ran off to a degenerate optimum ({values}); the data does not identify "
                       f"the model; a penalizer (e.g. 0.001) keeps the parameters finite")
    if not np.all(np.isfinite(result.x)) or not result.success:
        raise FitError(f"the {what} fit did not converge ({result.message}; after {result.nit} iterations, "
                       f"penalizer {penalizer}); a larger penalizer (e.g. 0.001) may help")
    return result.x, float(result.fun), int(result.nit), None


#: |log-parameter| beyond which a fit is running off (the degenerate-optimum check is at log(1e6))
_RUN_OFF = np.log(1e8)


def _damped_newton(evaluate, x0, gtol: float = 1e-10, maxiter: int = 500) -> _Result:
    """Newton's method damped as Levenberg and Marquardt's, from a cold start.

    Each step solves ``(H + lam I) step = -g``: ``lam`` 0 (a Newton step) while that decreases the
    objective, raised tenfold until the matrix is positive definite and the step decreases it (towards a
    short gradient step), lowered again after a success. Converged when the gradient is below ``gtol``, or
    when no step decreases the objective any more (none is accepted, or an accepted one lowers it by less than
    its rounding) with a gradient below 1e-7 (the objective's rounding).
    """
    theta = np.asarray(x0, dtype=float)
    value, grad, hess = evaluate(theta, True)
    if not (np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))):
        return _Result(theta, value, grad, 0, False, "the objective is not finite at the start")
    lam, eye = 0.0, np.eye(theta.size)
    for it in range(maxiter):
        if np.max(np.abs(grad)) < gtol:
            return _Result(theta, value, grad, it, True, "converged")
        if np.any(np.abs(theta) > _RUN_OFF):
            return _Result(theta, value, grad, it, True, "running off")  # the caller's degenerate check says so
        scale = max(1.0, float(np.max(np.abs(np.diag(hess)))))
        while True:
            try:
                np.linalg.cholesky(hess + lam * scale * eye)  # positive definite: a descent direction
                step = -np.linalg.solve(hess + lam * scale * eye, grad)
                trial = evaluate(theta + step, True)
                if np.isfinite(trial[0]) and trial[0] <= value + 1e-4 * float(np.dot(grad, step)) and \
                        np.all(np.isfinite(trial[1])) and np.all(np.isfinite(trial[2])):
                    break
            except np.linalg.LinAlgError:
                pass
            lam = max(lam * 10, 1e-8)
            if lam > 1e12:  # no step decreases the objective
                ok = np.max(np.abs(grad)) < 1e-7
                return _Result(theta, value, grad, it, ok, "converged" if ok else "no step decreases the objective")
        # at the optimum to the objective's rounding: the gradient below 1e-7 and the accepted step no longer
        # lowering the objective (an order of the inputs can leave the gradient just above gtol for good)
        settled = np.max(np.abs(trial[1])) < 1e-7 and trial[0] >= value - 1e-13 * max(1.0, abs(value))
        theta = theta + step
        value, grad, hess = trial
        if settled:
            return _Result(theta, value, grad, it + 1, True, "converged")
        lam = lam / 100 if lam > 1e-6 else 0.0
    return _Result(theta, value, grad, maxiter, False, "too many iterations")


def _newton(evaluate, x0, gtol: float = 1e-11, maxiter: int = 50) -> _Result:
    """Newton's method with a backtracking line search, from a start near the optimum.

    Each step solves ``H step = -g`` with the analytic Hessian and halves the step until the objective
    decreases enough (Armijo); the Hessian is evaluated with every trial point, so an accepted step (the
    rule near the optimum) costs one pass over the inputs. Not a success (the caller starts again from
    cold, damped) when the Hessian is not positive definite or no step decreases the objective.
    """
    theta = np.asarray(x0, dtype=float)
    value, grad, hess = evaluate(theta, True)
    for it in range(maxiter):
        if np.max(np.abs(grad)) < gtol:
            return _Result(theta, value, grad, it, True, "converged")
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        slope = float(np.dot(grad, step))
        if not np.isfinite(slope) or slope >= 0:  # not a descent direction: H is not positive definite
            break
        t = 1.0
        while t > 1e-6:
            trial = evaluate(theta + t * step, True)
            if np.isfinite(trial[0]) and trial[0] <= value + 1e-4 * t * slope:
                break
            t /= 2
        else:
            break
        theta = theta + t * step
        value, grad, hess = trial
    return _Result(theta, value, grad, maxiter, False, "Newton's method did not converge")


def _remember_last(evaluate):
    """``evaluate`` that gives back its last result when called again at the same point (the standard
    errors' Hessian at the optimum, which Newton's method evaluated last)."""
    last: dict = {}

    def remembered(theta, hessian=False):
        key = np.asarray(theta, dtype=float).tobytes()
        if last.get("key") != key or (hessian and not last["hessian"]):
            last.update(key=key, hessian=hessian, out=evaluate(theta, hessian))
        return last["out"] if hessian else last["out"][:2]

    return remembered


def _to_log_parameters(params, ll, grad, hess, total_weight, penalizer, hessian):
    """The mean negative log-likelihood plus the penalty, its gradient and Hessian, in log-parameters.

    ``ll``, ``grad`` and ``hess`` are the total log-likelihood's, in the parameters (``hess``: upper
    triangle filled); the chain rule: ``d/dlog p = p d/dp``, ``d2/dlog p_i dlog p_j = p_i p_j d2/dp_i dp_j
    + [i = j] p_i d/dp_i``.
    """
    value = -ll / total_weight + penalizer * np.sum(params ** 2)
    g = -grad / total_weight + 2 * penalizer * params
    if not hessian:
        return value, g * params
    h = np.triu(hess) + np.triu(hess, 1).T
    h = -h / total_weight + 2 * penalizer * np.eye(params.size)
    return value, g * params, np.outer(params, params) * h + np.diag(g * params)


def _standard_errors(hess, x, names, total_weight) -> dict[str, float | None]:
    """Delta-method standard errors from ``hess``, the analytic Hessian of the mean objective in
    log-parameters at the optimum ``x`` (times the total weight: the total negative log-likelihood's)."""
    h = hess * total_weight
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return dict.fromkeys(names)
    diag = np.diag(cov)
    params = np.exp(x)
    return {n: (float(p * np.sqrt(d)) if d > 0 and np.isfinite(d) else None)
            for n, p, d in zip(names, params, diag)}


def _unique_inverse(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(v, return_inverse=True)``; for whole numbers in a range of at most 2^22 (days, weeks) by a
    table of every value in the range instead of a sort."""
    if v.size:
        low, high = float(v.min()), float(v.max())
        if high - low < 1 << 22 and np.array_equal(v, np.rint(v)):
            k = (v - low).astype(np.intp)
            present = np.zeros(int(high - low) + 1, dtype=bool)
            present[k] = True
            uniq = np.flatnonzero(present)
            lookup = np.empty(present.size, dtype=np.intp)
            lookup[uniq] = np.arange(uniq.size)
            return uniq + low, lookup[k]
    return np.unique(v, return_inverse=True)


# ----------------------------------------------------------------------------- BG/NBD
#: From this many repeat buyers' distinct inputs on, BG/NBD's evaluation runs in two halves on two threads.
_PARALLEL_INPUTS = 200_000

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
    fixed subsample (damped Newton) and finishes on all of them by Newton's method on the analytic Hessian (the
    same optimum, a few passes over the inputs). The logarithms of ``alpha + T`` and ``alpha + tx`` are
    taken once per distinct T and tx (the calendar bounds them) and gathered; the gamma-function terms
    once per distinct frequency. From :data:`_PARALLEL_INPUTS` repeat buyers' inputs on, their terms are
    computed in two halves on two threads (the 1M-customer bench set: 0.25-0.3 s instead of 0.3-0.4 s beside
    the Gamma-Gamma fit, measured under load).
    """
    x, tx, T, w = (np.ascontiguousarray(v, dtype=float) for v in (x, tx, T, w))
    scale = 10.0 / T.max()
    W = w.sum()
    xs, inverse = np.unique(x, return_inverse=True)  # per distinct frequency: the gamma-function terms
    wx = np.bincount(inverse, weights=w)
    rep = x > 0
    xr, wr = x[rep], w[rep]
    ixr = inverse[rep]
    uT, iT = _unique_inverse(T[rep])
    utx, itx = _unique_inverse(tx[rep])
    uT, utx = uT * scale, utx * scale
    T0, w0 = T[~rep] * scale, w[~rep]
    # Many repeat buyers: their terms in two halves on two threads (NumPy's array operations release the GIL),
    # added in a fixed order, so every run gives the same result.
    half = xr.size // 2
    chunks = [slice(0, half), slice(half, xr.size)] if xr.size >= _PARALLEL_INPUTS else [slice(0, xr.size)]
    pool = ThreadPoolExecutor(2) if len(chunks) > 1 else None

    @_remember_last
    def evaluate(theta, hessian=False):
        params = np.exp(theta)
        r, alpha, a, b = params
        g, h = np.zeros(4), np.zeros((4, 4))
        # terms of each distinct frequency: A1 = lnG(r+x) - lnG(r) + r ln(alpha), A2 = lnB(a, b+x) / B(a, b)
        A1 = gammaln(r + xs) - gammaln(r) + r * np.log(alpha)
        A2 = gammaln(a + b) + gammaln(b + xs) - gammaln(b) - gammaln(a + b + xs)
        ll = np.dot(wx, A1 + A2)
        g[0] = np.dot(wx, digamma(r + xs) - digamma(r) + np.log(alpha))
        g[1] = r / alpha * W
        g[2] = np.dot(wx, digamma(a + b) - digamma(a + b + xs))
        g[3] = np.dot(wx, digamma(a + b) + digamma(b + xs) - digamma(b) - digamma(a + b + xs))
        if hessian:
            h[0, 0] = np.dot(wx, polygamma(1, r + xs) - polygamma(1, r))
            h[0, 1] = W / alpha
            h[1, 1] = -W * r / alpha ** 2
            h[2, 2] = h[2, 3] = np.dot(wx, polygamma(1, a + b) - polygamma(1, a + b + xs))
            h[3, 3] = np.dot(wx, polygamma(1, a + b) + polygamma(1, b + xs) - polygamma(1, b)
                             - polygamma(1, a + b + xs))
        # one purchase only: A3 = -r log(alpha + T)
        L0, i0 = np.log(alpha + T0), 1 / (alpha + T0)
        ll -= r * np.dot(w0, L0)
        g[0] -= np.dot(w0, L0)
        g[1] -= r * np.dot(w0, i0)
        if hessian:
            h[0, 1] -= np.dot(w0, i0)
            h[1, 1] += r * np.dot(w0, i0 * i0)
        # repeat buyers: log(exp(A3) + exp(A4)) = A3 + softplus(d), d = A4 - A3, with
        # A3 = -(r+x) log(alpha+T), A4 = log a - log(b+x-1) - (r+x) log(alpha+tx); in parts, summed in order
        per_T = (np.log(alpha + uT), 1 / (alpha + uT))
        per_tx = (np.log(alpha + utx), 1 / (alpha + utx))
        with np.errstate(divide="ignore"):  # x = 0 (never gathered here): b + x - 1 may be 0
            B_x = 1 / (b + xs - 1)
        def part(sl: slice):
            return _bgnbd_repeat(r, a, xr[sl], wr[sl], iT[sl], itx[sl], ixr[sl], per_T, per_tx, B_x, hessian)

        parts = list(pool.map(part, chunks)) if pool is not None else [part(chunks[0])]
        for part_ll, part_g, part_h in parts:
            ll += part_ll
            g += part_g
            if hessian:
                h += part_h
        return _to_log_parameters(params, ll, g, h, W, penalizer, hessian)

    try:
        return _fit_bgnbd(evaluate, x, tx, T, w, scale, W, penalizer, _start)
    finally:
        if pool is not None:
            pool.shutdown()


def _fit_bgnbd(evaluate, x, tx, T, w, scale, W, penalizer, _start) -> Fit:
    """:func:`fit_bgnbd`'s optimisation of ``evaluate``: a warm start on a subsample, then all inputs."""
    names = ["r", "alpha", "a", "b"]
    start = np.full(4, 0.1) if _start is None else _start
    sub = _subsample(x.size) if _start is None else None
    theta = None
    if sub is not None:
        try:
            warm = fit_bgnbd(x[sub], tx[sub], T[sub], w[sub], penalizer=penalizer, _start=start)
            p = warm.params
            start = np.log([p["r"], p["alpha"] * scale, p["a"], p["b"]])
            theta, fun, nit, _ = _minimize(evaluate, start, ["r", "alpha x 10/max(T)", "a", "b"],
                                               "BG/NBD", penalizer, newton=True)
        except FitError:  # the subsample says nothing, or Newton fails from there: from cold, damped
            theta = None
    if theta is None:
        theta, fun, nit, _ = _minimize(evaluate, start, ["r", "alpha x 10/max(T)", "a", "b"], "BG/NBD",
                                           penalizer)
    r, alpha, a, b = np.exp(theta)
    ses = (_standard_errors(evaluate(theta, True)[2], theta, names, W) if _start is None
           else dict.fromkeys(names))
    if ses["alpha"] is not None:
        ses["alpha"] = float(ses["alpha"] / scale)
    # The objective's likelihood is of times multiplied by ``scale``: each customer's x purchase times make it
    # scale^-x times the likelihood in the caller's time unit, given back here (Fader, Hardie and Lee's -9582.4 on
    # CDNOW in weeks; lifetimes reports only its scaled objective)
    ll = -(fun - penalizer * np.sum(np.exp(theta) ** 2)) * W + float(np.dot(w, x)) * np.log(scale)
    return Fit({"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}, ses, float(ll), nit,
               int(W), int(x.size))


def _bgnbd_repeat(r, a, xr, wr, iT, itx, ixr, per_T, per_tx, B_x, hessian):
    """The repeat buyers' share of BG/NBD's log-likelihood, gradient and Hessian (in the parameters)."""
    g, h = np.zeros(4), np.zeros((4, 4))
    L, M = per_T[0][iT], per_tx[0][itx]
    inv_T, inv_tx = per_T[1][iT], per_tx[1][itx]
    rx = r + xr
    B = B_x[ixr]
    D = L - M
    d = np.log(a) + np.log(B) + rx * D
    e = np.exp(-np.abs(d))
    s = np.where(d >= 0, 1 / (1 + e), e / (1 + e))  # sigmoid(d): the share of the second term
    ll = np.dot(wr, -rx * L + np.maximum(d, 0) + np.log1p(e))
    ws = wr * s
    E = rx * (inv_T - inv_tx)  # d(d)/d(alpha)
    wrx = wr * rx
    g[0] += np.dot(ws, D) - np.dot(wr, L)
    g[1] += np.dot(ws, E) - np.dot(wrx, inv_T)
    g[2] += ws.sum() / a
    g[3] -= np.dot(ws, B)
    if hessian:
        h[0, 1] += np.dot(ws, inv_T - inv_tx) - np.dot(wr, inv_T)
        inv_T2, inv_tx2 = inv_T * inv_T, inv_tx * inv_tx
        h[1, 1] += np.dot(wrx, inv_T2) - np.dot(ws * rx, inv_T2 - inv_tx2)
        h[2, 2] -= ws.sum() / a ** 2
        h[3, 3] += np.dot(ws, B * B)
        grad_d = np.stack([D, E, np.full(D.size, 1 / a), -B])
        h += (grad_d * (ws * (1 - s))) @ grad_d.T
    return ll, g, h


def p_alive(params: dict, x, tx, T):
    """P(alive | x, tx, T) (Fader, Hardie and Lee 2008, note 021); 1 for a customer with one purchase."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    log_div = (r + x) * np.log((alpha + T) / (alpha + tx)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


class Histories:
    """Customers' (frequency ``x``, recency ``tx``, age ``T``), with the distinct (x, T) pairs found once.

    The predictions factor as ``E[Y(t)] = P(alive) * G(x, T, t)``: the hypergeometric term, and so
    everything that depends on the horizon, is computed per distinct (x, T) pair (a few tens of
    thousands at 1M customers; the calendar bounds T) and gathered back by :attr:`inverse`. ``T_key``
    (integers, e.g. T in days when T is in weeks) identifies T's values exactly; without it T is
    keyed to 1e-6.
    """

    def __init__(self, x, tx, T, T_key=None):
        self.x, self.tx, self.T = (np.asarray(v, dtype=float) for v in (x, tx, T))
        self.inverse = np.zeros(0, dtype=np.intp)
        self.ux = self.uT = np.zeros(0)
        if not self.x.size:
            return
        kT = np.rint(self.T * 1e6).astype(np.int64) if T_key is None else np.asarray(T_key, dtype=np.int64)
        kx = np.rint(self.x).astype(np.int64)
        kT = kT - kT.min()
        span = int(kT.max()) + 1
        key = kx * span + kT
        size = (int(kx.max()) + 1) * span
        if size <= 1 << 22:  # a dense table of every possible key: no sort
            present = np.zeros(size, dtype=bool)
            present[key] = True
            uniq = np.flatnonzero(present)
            lookup = np.empty(size, dtype=np.intp)
            lookup[uniq] = np.arange(uniq.size)
            self.inverse = lookup[key]
            first = np.empty(uniq.size, dtype=np.intp)
            first[self.inverse[::-1]] = np.arange(key.size)[::-1]  # any customer of the pair will do
        else:
            _, first, self.inverse = np.unique(key, return_index=True, return_inverse=True)
        self.ux, self.uT = self.x[first], self.T[first]


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
    return out


def growth(params: dict, t: float, h: Histories):
    """G(x, T, t) per distinct (x, T) pair: ``E[Y(t) | x, tx, T] = P(alive | x, tx, T) * G(x, T, t)``.

    ``G = (a + b + x - 1) / (a - 1) * (1 - 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t)) ((alpha+T)/(alpha+T+t))^(r+x))``
    (Fader, Hardie and Lee 2005, eq. 10, whose denominator is 1 / P(alive)); 0 for t = 0.
    """
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    if t <= 0:
        return np.zeros_like(h.ux)
    x, T = h.ux, h.uT
    return (a + b + x - 1) / (a - 1) * -np.expm1(_log_hyp(params, h, t) + (r + x) * np.log((alpha + T) / (alpha + T + t)))


def expected_purchases(params: dict, t: float, h: Histories, alive=None):
    """E[Y(t) | x, tx, T]: expected purchases in the next ``t`` periods (lifetimes' ``predict``).

    ``alive``: the customers' P(alive), when already computed."""
    alive = p_alive(params, h.x, h.tx, h.T) if alive is None else alive
    return alive * growth(params, t, h)[h.inverse]


def discount_factors(params: dict, months: int, monthly_rate: float, unit: str, h: Histories):
    """Per distinct (x, T) pair: sum over months m = 1..H of ``(G(m f) - G((m-1) f)) / (1 + d)^m``."""
    return horizon_and_discount_factors(params, months, monthly_rate, unit, h)[1]


def horizon_and_discount_factors(params: dict, months: int, monthly_rate: float, unit: str, h: Histories):
    """Per distinct (x, T) pair: ``G(H f)`` (the growth at the horizon, :func:`growth`) and the discount factors
    (:func:`discount_factors`), from one run over the months (the last month's G is the horizon's)."""
    f = MONTH[unit]
    total = np.zeros_like(h.ux)
    before = np.zeros_like(h.ux)
    for m in range(1, months + 1):
        now = growth(params, m * f, h)
        total += (now - before) / (1 + monthly_rate) ** m
        before = now
    return before, total


def discounted_value(params: dict, months: int, monthly_rate: float, unit: str, h: Histories, value, alive=None):
    """lifetimes' ``customer_lifetime_value``: sum over months m = 1..H of
    ``value * (E[Y(m*f)] - E[Y((m-1)*f)]) / (1 + d)^m`` with f periods per month (:data:`MONTH`).

    With ``E[Y(t)] = P(alive) G(x, T, t)`` this is ``value * P(alive) * S(x, T)``, ``S`` the discounted
    sum of G's monthly steps, computed once per distinct (x, T) pair (:func:`discount_factors`)."""
    alive = p_alive(params, h.x, h.tx, h.T) if alive is None else alive
    return np.asarray(value, dtype=float) * alive * discount_factors(params, months, monthly_rate, unit, h)[h.inverse]


# ------------------------------------------------------------------------ Gamma-Gamma
def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, w: np.ndarray, *, penalizer: float = 0.0,
                    _start: np.ndarray | None = None) -> Fit:
    """Fit Gamma-Gamma to repeat buyers' (frequency ``x`` > 0, mean repeat spend ``m`` > 0), ``w`` each.

    Objective as lifetimes': mean negative log-likelihood plus ``penalizer * (p^2 + q^2 + v^2)``;
    warm-started from a fixed subsample when there are many inputs and finished by Newton's method,
    as :func:`fit_bgnbd`.
    """
    x, m, w = (np.ascontiguousarray(v, dtype=float) for v in (x, m, w))
    W = w.sum()
    xs, inverse = np.unique(x, return_inverse=True)
    wx = np.bincount(inverse, weights=w)
    logm = np.log(m)
    xm = x * m
    c_xlogm, c_logm = np.dot(w, x * logm), np.dot(w, logm)
    c_xlogx = np.dot(wx, xs * np.log(xs))
    weights = np.stack([w * x, w])  # the per-input sums below are against these two

    @_remember_last
    def evaluate(theta, hessian=False):
        params = np.exp(theta)
        p, q, v = params
        px = p * xs
        lxv = np.log(xm + v)
        u = 1 / (xm + v)
        rows = np.stack([lxv, u, u * u]) if hessian else np.stack([lxv, u])
        sums = rows @ weights.T  # sums[k, 0] = sum w x row_k, sums[k, 1] = sum w row_k
        (wx_lxv, w_lxv), (wx_u, w_u) = sums[0], sums[1]
        ll = (np.dot(wx, gammaln(px + q) - gammaln(px) - gammaln(q)) + W * q * np.log(v)
              + p * c_xlogm - c_logm + p * c_xlogx - p * wx_lxv - q * w_lxv)
        g = np.array([
            np.dot(wx, xs * (digamma(px + q) - digamma(px))) + c_xlogm + c_xlogx - wx_lxv,
            np.dot(wx, digamma(px + q) - digamma(q)) + W * np.log(v) - w_lxv,
            W * q / v - p * wx_u - q * w_u,
        ])
        h = np.zeros((3, 3))
        if hessian:
            wx_u2, w_u2 = sums[2]
            tri = polygamma(1, px + q)
            h[0, 0] = np.dot(wx, xs * xs * (tri - polygamma(1, px)))
            h[0, 1] = np.dot(wx, xs * tri)
            h[0, 2] = -wx_u
            h[1, 1] = np.dot(wx, tri) - W * polygamma(1, q)
            h[1, 2] = W / v - w_u
            h[2, 2] = -W * q / v ** 2 + p * wx_u2 + q * w_u2
        return _to_log_parameters(params, ll, g, h, W, penalizer, hessian)

    names = ["p", "q", "v"]
    start = np.full(3, 0.1) if _start is None else _start
    sub = _subsample(x.size) if _start is None else None
    theta = None
    if sub is not None:
        try:
            warm = fit_gamma_gamma(x[sub], m[sub], w[sub], penalizer=penalizer, _start=start)
            start = np.log([warm.params[k] for k in names])
            theta, fun, nit, _ = _minimize(evaluate, start, names, "Gamma-Gamma", penalizer, newton=True)
        except FitError:
            theta = None
    if theta is None:
        theta, fun, nit, _ = _minimize(evaluate, start, names, "Gamma-Gamma", penalizer)
    ses = (_standard_errors(evaluate(theta, True)[2], theta, names, W) if _start is None
           else dict.fromkeys(names))
    p, q, v = (float(z) for z in np.exp(theta))
    return Fit({"p": p, "q": q, "v": v}, ses, float(-(fun - penalizer * (p * p + q * q + v * v)) * W),
               nit, int(W), int(x.size))


def expected_average_value(params: dict, x, m):
    """E[M | x, m]: the expected mean spend of a customer's future purchases (lifetimes'
    ``conditional_expected_average_profit``); the population mean ``p v / (q - 1)`` for x = 0."""
    p, q, v = (params[k] for k in ("p", "q", "v"))
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weight = p * x / (p * x + q - 1)
    return (1 - weight) * (v * p / (q - 1)) + weight * np.where(x > 0, m, 0.0)
