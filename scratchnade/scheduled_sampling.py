"""Scheduled sampling (Bengio et al., 2015), a remedy for exposure bias.

Trained by teacher forcing, a recurrence only ever reads real prefixes; sampling feeds it
its own draws.  With probability 1 - eps_i per (t, j) at training step i the input x_t is
replaced by a draw from the model's own conditional:

    w^_t ~ softmax(f_t)                       the model's sample for position t
    in_t = x_t with prob. eps_i, else w^_t    what the recurrence reads
    h_t  = step(h_{t-1}, in_t)                e.g. sigmoid(c + W_h h_{t-1} + W_x in_t)
    loss = -sum_t log softmax(f_t)[w_t]       the target stays the real token

The draws are constants: no gradient flows through the sampling, so the loss and gradients
are those of teacher forcing with `in` in place of x.  eps = 1 is plain training, bit for bit.

This module holds the schedule eps_i (host arithmetic) and the draw of `in`; it knows no
model (the recurrence comes in as two functions), so the recurrent NADE and the plots both
import it without importing each other.
"""
import math

import numpy as np

from .backend import get_xp
from .functional import categorical_draw

SCHEDULES = {"linear": {"k": 1.0, "c": 1e-3}, "exponential": {"k": 0.999}, "inverse-sigmoid": {"k": 500.0}}


def teacher_forcing_schedule(kind, i, k=None, c=None, eps_min=0.0):
    """Probability eps_i of feeding the real token at training step i (Bengio et al., 2015).

        linear            eps_i = max(eps_min, min(1, k - c i))       k > 0, c >= 0 (default 1, 1e-3)
        exponential       eps_i = max(eps_min, k^i)                  0 < k <= 1    (default 0.999)
        inverse-sigmoid   eps_i = max(eps_min, k / (k + exp(i / k)))  k >= 1        (default 500)

    i: a step count >= 0 (an int, or an array of them for plots); host arithmetic.
    Returns a float in [eps_min, 1] (an array for array i).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"scheduled sampling decays as one of {', '.join(SCHEDULES)}, got {kind!r}")
    if c is not None and kind != "linear":
        raise ValueError(f"c (the slope) only applies to the linear schedule, not {kind!r}")
    if not 0.0 <= eps_min <= 1.0:
        raise ValueError(f"eps_min must be in [0, 1], got {eps_min}")
    k = SCHEDULES[kind]["k"] if k is None else float(k)
    i = np.asarray(i, dtype=np.float64)
    if np.any(i < 0):
        raise ValueError("training steps i must be >= 0")
    if kind == "linear":
        c = SCHEDULES["linear"]["c"] if c is None else float(c)
        if not (k > 0 and c >= 0):
            raise ValueError(f"linear schedule needs k > 0 and c >= 0, got k = {k}, c = {c}")
        eps = np.minimum(1.0, k - c * i)                         # k - c i
    elif kind == "exponential":
        if not 0 < k <= 1:
            raise ValueError(f"exponential schedule needs 0 < k <= 1, got k = {k}")
        eps = k ** i                                             # k^i (underflows quietly to 0)
    else:
        if not k >= 1:
            raise ValueError(f"inverse-sigmoid schedule needs k >= 1, got k = {k}")
        z = math.log(k) - i / k                                  # k / (k + e^{i/k}) = sigmoid(z)
        e = np.exp(-np.abs(z))                                   # never overflows
        eps = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    eps = np.maximum(eps_min, eps)
    return float(eps) if eps.ndim == 0 else eps


def scheduled_inputs(x, keep, u, h0, logits_of, step):
    """The tokens a recurrence reads under scheduled sampling: x_t, or the model's draw.

        f_t  = logits_of(h_{t-1})
        w^_t = inverse-cdf draw from softmax(f_t) with uniform u_t     (temperature 1)
        in_t = x_t where keep_t, else w^_t
        h_t  = step(h_{t-1}, t, in_t)

    Inputs: x (T, B) ids; keep (T, B) bool, True feeds the real token (Bernoulli(eps) coins);
    u (T, B) uniforms in [0, 1); h0 (B, H) the start state; logits_of: (B, H) -> (B, V);
    step: (h (B, H), t, in_t (B,)) -> (B, H).  keep and u are drawn by the caller, so this is
    a deterministic function of them.  Returns in (T, B) ids.
    f_t must be computed step by step here: it needs h_{t-1}, which needs in_{t-1}.
    """
    xp = get_xp(x, h0)
    T = x.shape[0]
    fed = x.copy()
    h = h0                                                # h_0
    for t in range(T):
        w = categorical_draw(logits_of(h), u[t])          # w^_t ~ softmax(f_t)
        fed[t] = xp.where(keep[t], x[t], w)               # in_t
        if t < T - 1:                                     # h_T feeds no f_t of this window
            h = step(h, t, fed[t])                        # h_t from in_t
    return fed
