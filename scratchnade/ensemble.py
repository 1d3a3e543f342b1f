"""Ensembles over orderings or mask sets, done as a mixture (so the result is a likelihood).

A model with several members (the orderings of an order-agnostic NADE, the mask sets of a
connectivity-agnostic MADE) gives K normalised distributions p_k over x in {0, 1}^D.  Their
equal-weight mixture is one more distribution, scored per example from each member's exact
joint log-likelihood:

    log p_ens(x) = logsumexp_k log p_k(x) - log K               (B,)   k = 0..K-1

It sums to 1 over x because each p_k does, and by Jensen's inequality (log is concave)

    log p_ens(x) >= (1/K) sum_k log p_k(x)                      for every x,

so the ensemble's NLL is never worse than the members' mean NLL.

What it is not: averaging the members' per-pixel predictions,

    q(x) = prod_d pbar_d(x),   pbar_d(x) = (1/K) sum_k p_k(x_d | the dimensions before d in member k's ordering),

is a product of numbers that each look like conditionals, but member k conditions pixel d on a
different set of pixels than member j does, so q is not a chain-rule factorisation of any one
distribution and sum_x q(x) != 1 in general.  A "test NLL" of -log q(x) is not a likelihood.
:func:`per_pixel_average_log_prob` computes it only so the tests and notebook 08 can show the error.
"""
import math

import numpy as np

from .backend import get_xp
from .functional import logsumexp


def member_log_probs(model, x, K):
    """log p_k(x) for the members k = 0..K-1 of `model`, stacked: (K, B).

    `model` has ``log_prob(x, member=k) -> (B,)`` (an exact joint log-likelihood per member).
    """
    check_members(model, K)
    xp = get_xp(x)
    return xp.stack([model.log_prob(x, member=k) for k in range(K)])


def mixture_log_prob(logps):
    """log of the equal-weight mixture: logsumexp over axis 0 of logps (K, B), minus log K -> (B,)."""
    return logsumexp(logps, axis=0) - math.log(logps.shape[0])


def ensemble_log_prob(model, x, K):
    """log p_ens(x) = logsumexp_k log p_k(x) - log K over members 0..K-1: (B,), a normalised density."""
    return mixture_log_prob(member_log_probs(model, x, K))


def per_pixel_average_log_prob(model, x, K):
    """The score NOT to report: sum_d log Bern(x_d; pbar_d) with pbar_d the members' mean conditional.

    `model` has ``conditionals(x, member=k) -> (B, D)``: p_k(x_d = 1 | x before d in member k's
    ordering), in the original dimension order.  Returns (B,).  Not normalised over x (see the
    module docstring); kept to measure how far from 1 its sum is.
    """
    check_members(model, K)
    xp = get_xp(x)
    pbar = sum(model.conditionals(x, member=k) for k in range(K)) / K          # (B, D)
    return xp.log(xp.where(x > 0.5, pbar, 1.0 - pbar)).sum(axis=1)


def check_members(model, K):
    """ValueError unless K is a whole number of members, >= 1, that `model` has."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"ensemble size K must be a whole number >= 1, got {K!r}")
    n = getattr(model, "n_members", None)
    if n is not None and K > n:
        raise ValueError(f"ensemble of K = {K} members asked, but {type(model).__name__} has {n} "
                         f"(train it with more masks)")


class Ensemble:
    """A K-member mixture of `model`, usable wherever a binary model is scored (evaluate, stderr).

    ``log_prob(x) -> (B,)`` is :func:`ensemble_log_prob`; ``loss(x)`` its mean NLL.  Everything
    else (dtype, device, config, training) is the wrapped model's.
    """

    def __init__(self, model, K):
        check_members(model, K)
        self.model, self.K = model, int(K)

    def log_prob(self, x):
        return ensemble_log_prob(self.model, x, self.K)

    def loss(self, x):
        return -float(self.log_prob(x).mean())

    @property
    def training(self):
        return getattr(self.model, "training", False)

    @training.setter
    def training(self, value):
        self.model.training = value

    def __getattr__(self, name):                     # dtype, device, config, ... of the members' model
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self):
        return f"Ensemble({self.model!r}, K={self.K})"
