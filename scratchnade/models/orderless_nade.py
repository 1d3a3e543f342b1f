"""Order-agnostic (deep) NADE for binary vectors (Uria, Murray & Larochelle, ICML 2014; JMLR 2016).

One network gives p(x_j = 1 | x_S) for ANY set S of observed dimensions.  A mask m in {0, 1}^D
marks S (m_j = 1 iff x_j is observed); the input is x * m concatenated with m (2D values):

    h_1 = act(c + W (x * m) + U m)              (H,)   U: the mask's own input weights
    h_l = act(c_l + W_l h_{l-1})                (H,)   l = 2..L
    l   = b + V h_L                             (D,)   logits
    p(x_j = 1 | x_S) = sigmoid(l_j)                    for every unobserved j (m_j = 0)

act = ReLU (default) or sigmoid.  Parameters: W (H, D), U (H, D), c (H,), V (D, H), b (D,);
for L >= 2 also W_l (L-1, H, H) and c_l (L-1, H), stacked: W_l[l-2] = W_l, c_l[l-2] = c_l.
Data x (B, D) and masks m (B, D) have entries in {0, 1}.

Training: per example an ordering o (uniform over the D! permutations) and a split d (uniform
in {0, ..., D-1}); m_j = 1 for the first d dimensions o_1..o_d of o.  With d = sum_j m_j,

    loss(x, m) = D / (D - d) sum_{j: m_j = 0} [softplus(l_j) - x_j l_j]     per example
    batch loss = mean over the examples

    E_o E_d loss(x, m(o, d)) = E_o [-log p_o(x)]          (its expectation: nats per example)

Every ordering o is a NADE; its exact likelihood uses D masked passes, pass d with m = 1[o_<d]:

    log p_o(x) = sum_d log Bern(x_{o_d}; sigmoid(l_{o_d}(x, m = 1[o_<d])))

The first-layer pre-activations of those passes are one running sum in the ordering,

    a_1 = c,    a_{d+1} = a_d + W_{:,o_d} x_{o_d} + U_{:,o_d}                (H,)

so L = 1 costs O(DH) per example, as NADE does; each further layer adds O(D H^2).
"""
from typing import NamedTuple

import numpy as np

from ..backend import asnumpy, default_device, device_of, get_xp, resolve_dtype, to_device
from ..functional import (bernoulli_nll, bernoulli_nll_backward, check_binary, relu, relu_backward, sigmoid,
                          sigmoid_backward)
from .base import Model, init_pixel_bias

ACTIVATIONS = ("relu", "sigmoid")


# ----------------------------------------------------------------------------- reference (the paper)

class OrderlessReferenceCache(NamedTuple):
    x: object         # (B, D) the data in the parameters' dtype
    m: object         # (B, D) the mask, 1 = observed
    inp: object       # (B, 2D) the input [x * m, m]
    h: dict           # h[l] (B, H) hidden layer l = 1..L
    logit: object     # (B, D) l = b + V h_L
    params: dict
    activation: str


def reference_forward(params, x, m, activation="relu"):
    """Mean over the batch of the rescaled masked loss, by the paper's equations.

    Inputs: params {W (H, D), U (H, D), c (H,), V (D, H), b (D,)} plus {W_l (L-1, H, H),
    c_l (L-1, H)} when L >= 2; x (B, D) binary; m (B, D) binary mask (1 = observed), every
    row with at least one unobserved dimension.  Returns (loss, OrderlessReferenceCache).
    Vectorised over the batch; the loop is over layers, as in the paper.

        loss = 1/B sum_b D / (D - d_b) sum_{j: m_bj = 0} [softplus(l_bj) - x_bj l_bj]
    """
    xp = get_xp(x, m, *params.values())
    _check_input(params, x)
    _check_activation(activation)
    _check_mask(m, x)
    W, U, c, V, b = (params[k] for k in ("W", "U", "c", "V", "b"))
    B, D = x.shape
    x, m = x.astype(W.dtype), m.astype(W.dtype)
    inp = xp.concatenate([x * m, m], axis=1)                       # [x * m, m]  (B, 2D)
    h = {}
    h[1] = activate(c + inp @ xp.concatenate([W, U], axis=1).T, activation)   # h_1 = act(c + W (x*m) + U m)
    for l in range(2, num_layers(params) + 1):
        h[l] = activate(params["c_l"][l - 2] + h[l - 1] @ params["W_l"][l - 2].T, activation)  # h_l
    logit = b + h[len(h)] @ V.T                                    # l = b + V h_L  (B, D)
    d = m.sum(axis=1)                                              # number observed  (B,)
    nll = bernoulli_nll(logit, x)                                  # softplus(l_j) - x_j l_j
    loss = (D / (D - d) * ((1.0 - m) * nll).sum(axis=1)).sum() / B  # rescaled sum over unobserved, mean
    return loss, OrderlessReferenceCache(x, m, inp, h, logit, params, activation)


def reference_backward(dloss, cache):
    """Gradients {W, U, c, V, b} (+ {W_l, c_l} when L >= 2) of the reference loss, layer by layer.

    The first layer is one product with the concatenation [W U] (H, 2D); its gradient is
    split back into dW = first D columns and dU = last D columns.
    """
    x, m, inp, h, logit, params, activation = cache
    xp = get_xp(x, params["W"])
    B, D = x.shape
    L = len(h)
    scale = D / (D - m.sum(axis=1))                                # D / (D - d)  (B,)
    dlogit = bernoulli_nll_backward(dloss / B * scale[:, None] * (1.0 - m), logit, x)  # (B, D)
    grads = {"V": dlogit.T @ h[L], "b": dlogit.sum(axis=0)}        # l = b + V h_L
    dh = dlogit @ params["V"]                                      # dloss/dh_L
    if L > 1:
        grads["W_l"], grads["c_l"] = xp.zeros_like(params["W_l"]), xp.zeros_like(params["c_l"])
    for l in range(L, 1, -1):
        da = activate_backward(dh, h[l], activation)               # dloss/da_l
        grads["W_l"][l - 2] = da.T @ h[l - 1]                      # a_l = c_l + W_l h_{l-1}
        grads["c_l"][l - 2] = da.sum(axis=0)
        dh = da @ params["W_l"][l - 2]                             # dloss/dh_{l-1}
    da = activate_backward(dh, h[1], activation)                   # dloss/da_1
    dWU = da.T @ inp                                               # d[W U]  (H, 2D)
    grads.update(W=dWU[:, :D], U=dWU[:, D:], c=da.sum(axis=0))
    return grads


def reference_log_prob_in_order(params, x, order, activation="relu"):
    """log p_o(x) (B,) by its definition: D masked passes of :func:`reference_forward`, any depth.

    Pass d (counting from 0) observes m = 1 on order[:d] and contributes the log-probability of
    x at dimension order[d] given those.  D full passes, O(D^2 H) per example: a check, not a tool.
    """
    xp = get_xp(x, *params.values())
    B, D = x.shape
    order = _check_order(order, D)
    x = x.astype(params["W"].dtype)
    logp = xp.zeros(B, dtype=x.dtype)
    for d in range(D):
        j = int(order[d])
        m = xp.zeros((B, D), dtype=x.dtype)
        for i in order[:d]:
            m[:, int(i)] = 1.0                                     # m = 1 on o_<d
        logit = reference_forward(params, x, m, activation)[1].logit[:, j]   # l_{o_d}
        logp = logp - bernoulli_nll(logit, x[:, j])                # + log p(x_{o_d} | x_{o_<d})
    return logp


# ----------------------------------------------------------------------------- fast (same maths)

class OrderlessCache(NamedTuple):
    xm: object        # (B, D) x * m, the observed values
    m: object         # (B, D) the mask
    hs: list          # hs[l-1] (B, H) hidden layer l = 1..L
    dlogits: object   # (B, D) the logits, overwritten by dloss/dl in backward
    x: object         # (B, D) the data in the parameters' dtype
    weights: object   # (B, D) w_bj = D / (D - d_b) (1 - m_bj) / B
    params: dict
    activation: str


def forward(params, x, m, activation="relu"):
    """Same loss as :func:`reference_forward`, fast.  Inputs as there.  Returns (loss, OrderlessCache).

    Tricks over the reference: no (B, 2D) concatenation -- the first layer is two products
    accumulated into one buffer, a_1 = (x*m) W^T, a_1 += m U^T, a_1 += c; every activation is
    written over its pre-activation (out=); and the rescaling and the mask are folded into one
    weight per (example, dimension), so the loss is a single weighted sum:

        w_bj = D / (D - d_b) (1 - m_bj) / B,       loss = sum_bj w_bj [softplus(l_bj) - x_bj l_bj]
    """
    _check_input(params, x)
    _check_activation(activation)
    _check_mask(m, x)
    W, U, c, V, b = (params[k] for k in ("W", "U", "c", "V", "b"))
    B, D = x.shape
    x, m = x.astype(W.dtype), m.astype(W.dtype)
    xm = x * m                                                     # observed values
    a = xm @ W.T                                                   # W (x * m)
    a += m @ U.T                                                   # + U m
    a += c                                                         # + c
    hs = [activate_(a, activation)]                                # h_1
    for l in range(2, num_layers(params) + 1):
        a = hs[-1] @ params["W_l"][l - 2].T                        # W_l h_{l-1}
        a += params["c_l"][l - 2]                                  # + c_l
        hs.append(activate_(a, activation))                        # h_l
    logits = hs[-1] @ V.T                                          # V h_L
    logits += b                                                    # + b
    weights = 1.0 - m
    weights *= (D / (D - m.sum(axis=1)) / B)[:, None]              # w_bj
    loss = (weights * bernoulli_nll(logits, x)).sum()
    return loss, OrderlessCache(xm, m, hs, logits, x, weights, params, activation)


def backward(dloss, cache):
    """Gradients of every parameter, same as :func:`reference_backward`.  Call once per forward.

        dl    = dloss w (sigmoid(l) - x)                           (B, D)
        dV    = dl^T h_L,   db = sum_b dl,   dh_L = dl V
        da_l  = dh_l act'(a_l),   dW_l = da_l^T h_{l-1},   dc_l = sum_b da_l,   dh_{l-1} = da_l W_l
        dW    = da_1^T (x * m),   dU = da_1^T m,   dc = sum_b da_1

    Tricks: dl is written over the forward's logits buffer, and each da_l over dh_l (in place);
    dW and dU are two products with the (x * m) and m the forward kept, not one with a
    concatenation.
    """
    xm, m, hs, dl, x, weights, params, activation = cache
    xp = get_xp(params["W"])
    sigmoid(dl, out=dl)                                            # p = sigmoid(l)
    dl -= x
    dl *= weights
    dl *= dloss                                                    # dl
    grads = {"V": dl.T @ hs[-1], "b": dl.sum(axis=0)}
    dh = dl @ params["V"]                                          # dh_L
    L = len(hs)
    if L > 1:
        grads["W_l"], grads["c_l"] = xp.empty_like(params["W_l"]), xp.empty_like(params["c_l"])
    for l in range(L, 1, -1):
        da = activate_backward_(dh, hs[l - 1], activation)         # da_l, in place
        xp.matmul(da.T, hs[l - 2], out=grads["W_l"][l - 2])        # dW_l
        grads["c_l"][l - 2] = da.sum(axis=0)                       # dc_l
        dh = da @ params["W_l"][l - 2]                             # dh_{l-1}
    da = activate_backward_(dh, hs[0], activation)                 # da_1
    grads.update(W=da.T @ xm, U=da.T @ m, c=da.sum(axis=0))
    return grads


BLOCK_ELEMENTS = 1 << 21   # (positions x batch x H) entries per block of ordered_logits (16 MB in float64)


def ordered_logits(params, x, order, activation="relu"):
    """The logit of every conditional of ordering o: l[b, o_d] = logit p(x_{o_d} = 1 | x_{o_<d}).

    Inputs: x (B, D) binary; order (D,) a permutation of 0..D-1 (host or device ints).
    Returns logits (B, D) in the ORIGINAL dimension order (column j holds the conditional of x_j).

    Tricks over the D masked passes of :func:`reference_log_prob_in_order`: pass d's mask is
    the prefix o_<d, so the first-layer pre-activations of the passes are one running sum in
    the ordering (a_1 = c, a_{d+1} = a_d + W_{:,o_d} x_{o_d} + U_{:,o_d}), O(H) per position
    instead of O(DH); and pass d needs only its one logit l_{o_d} = b_{o_d} + V_{o_d} . h_L, a
    dot product instead of the (D, H) output layer.  Positions go in blocks of K (K B H <=
    BLOCK_ELEMENTS): the block's increments are gathered at once, (K, B, H), turned into
    pre-activations by an in-place running sum over the block's positions that starts from the
    carry a_d, the layers above run as one (K B, H) @ (H, H) product per layer (the "D masked
    passes" of a deep model, batched), and the K logits are one batched matrix-vector product.

        inc_d = x_{o_d} W_{:,o_d} + U_{:,o_d}             (K, B, H) one gather per block
        a_d   = a_{d-1} + inc_{d-1}                        running sum, in place
        l_{o_d} = b_{o_d} + V_{o_d} . h_L(a_d)             (K, B) batched matvec
    """
    _check_input(params, x)
    _check_activation(activation)
    W, U, c, V, b = (params[k] for k in ("W", "U", "c", "V", "b"))
    xp = get_xp(W, x)
    B, D = x.shape
    H = W.shape[0]
    o = to_device(_check_order(order, D), device_of(W))           # (D,) dims in order
    x = x.astype(W.dtype)
    logits = xp.empty((B, D), dtype=W.dtype)
    carry = xp.zeros((B, H), dtype=W.dtype) + c                    # a_1 = c
    K = max(1, min(D, BLOCK_ELEMENTS // max(1, B * H)))            # positions per block
    for start in range(0, D, K):
        j = o[start:start + K]                                     # (K,) dims of this block
        inc = x[:, j].T[:, :, None] * W[:, j].T[:, None, :]        # x_{o_d} W_{:,o_d}  (K, B, H)
        inc += U[:, j].T[:, None, :]                               # + U_{:,o_d}
        a = xp.empty_like(inc)
        a[0] = carry                                               # a_d at the block's first position
        a[1:] = inc[:-1]
        for k in range(1, a.shape[0]):
            a[k] += a[k - 1]                                       # a_{d+1} = a_d + inc_d
        carry = a[-1] + inc[-1]                                    # a at the next block's start
        h = upper_layers(params, activate_(a, activation), activation)   # h_L of each pass  (K, B, H)
        l = xp.matmul(h, V[j][:, :, None])[:, :, 0]                # V_{o_d} . h_L  (K, B)
        logits[:, j] = (l + b[j][:, None]).T                       # + b_{o_d}, back to dim order
    return logits


def log_prob_in_order(params, x, order, activation="relu"):
    """log p_o(x) = sum_d log p(x_{o_d} | x_{o_<d}), exact, (B,).  O(DH + D (L-1) H^2) per example.

    Inputs: x (B, D) binary; order (D,) a permutation of 0..D-1.  The conditionals come from
    :func:`ordered_logits` (running sum for the first layer, batched passes for the rest).
    """
    return -bernoulli_nll(ordered_logits(params, x, order, activation), x.astype(params["W"].dtype)).sum(axis=1)


def upper_layers(params, h, activation):
    """h_L from h_1: h_l = act(c_l + W_l h_{l-1}) for l = 2..L.  h (..., H) -> (..., H).

    Leading axes are flattened into one (N, H) @ (H, H) product per layer."""
    shape = h.shape
    h = h.reshape(-1, shape[-1])
    for l in range(2, num_layers(params) + 1):
        a = h @ params["W_l"][l - 2].T                             # W_l h_{l-1}
        a += params["c_l"][l - 2]                                  # + c_l
        h = activate_(a, activation)                               # h_l
    return h.reshape(shape)


def draw_masks(rng, B, D):
    """Training masks, on the host: (B, D) float64, m_bj = 1 iff j is among the first d_b of o_b.

    Per example an ordering o_b = argsort(u_b) of D iid uniforms u_b (a uniform random
    permutation; ties have probability 0) and a split d_b uniform in {0, ..., D-1}.  Then
    rank_bj = the position of j in o_b = argsort(o_b)_j, and m_bj = 1[rank_bj < d_b].
    Draws: rng.random((B, D)) first, then rng.integers(0, D, B).
    """
    u = rng.random((B, D))                                         # o_b = argsort(u_b)
    d = rng.integers(0, D, size=B)                                 # d_b in {0, ..., D-1}
    rank = np.argsort(np.argsort(u, axis=1), axis=1)               # position of j in o_b
    return (rank < d[:, None]).astype(np.float64)


# ----------------------------------------------------------------------------- model

class OrderlessNADE(Model):
    """Order-agnostic NADE with L hidden layers of H units over D binary dimensions.

    Parameters: W (H, D), U (H, D), c (H,), V (D, H), b (D,); for L >= 2 also W_l (L-1, H, H),
    c_l (L-1, H).  Data: (B, D) in {0, 1}.

    Initialisation (host, numpy.random.default_rng(seed), drawn in the order W, U, V, W_l):
    weights ~ N(0, gain / fan_in) with gain 2 for relu (He) and 1 for sigmoid, fan_in = 2D for
    W and U (their input is [x * m, m]) and H for W_l and V; or N(0, init_scale^2) when
    init_scale is given.  Biases c, c_l, b = 0 (see `init_bias`).

    Orderings (the ensemble members): member k is numpy.random.default_rng([seed, 2, k])
    .permutation(D); every k >= 0 is valid.  All are random, as in Uria et al.'s ensembles: the
    raster order is a poor one for an order-agnostic model on MNIST (about 11 nats worse than a
    random ordering, measured), so it is not member 0.
    Training masks come from ``self._rng = default_rng([seed, 3])`` (saved in checkpoints).
    """

    def __init__(self, D, H=500, layers=1, activation="relu", seed=0, dtype=None, init_scale=None,
                 device=None):
        for name, value in (("D", D), ("H", H), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"OrderlessNADE: {name} must be an integer >= 1, got {value!r}")
        _check_activation(activation)
        if init_scale is not None and not (np.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"OrderlessNADE: init_scale must be a finite number > 0 or None, got {init_scale!r}")
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        gain = 2.0 if activation == "relu" else 1.0

        def std(fan_in):
            return init_scale if init_scale is not None else np.sqrt(gain / fan_in)

        params = {
            "W": rng.normal(0.0, std(2 * D), size=(H, D)),         # observed values -> hidden
            "U": rng.normal(0.0, std(2 * D), size=(H, D)),         # mask -> hidden
            "c": np.zeros(H),                                      # first hidden bias
            "V": rng.normal(0.0, std(H), size=(D, H)),             # hidden -> output logits
            "b": np.zeros(D),                                      # output bias
        }
        if layers > 1:
            params["W_l"] = rng.normal(0.0, std(H), size=(layers - 1, H, H))   # W_l[l-2] = W_l
            params["c_l"] = np.zeros((layers - 1, H))                          # c_l[l-2] = c_l
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.config = {"D": D, "H": H, "layers": layers, "activation": activation, "seed": seed,
                       "dtype": dt.name, "init_scale": init_scale}   # no device: checkpoints must not pin it
        self.activation = activation
        self._rng = np.random.default_rng([seed, 3])               # training masks (orderings, splits)

    @property
    def n_members(self):
        """None: every ordering k >= 0 is a member (no cap)."""
        return None

    def ordering(self, member=0):
        """Ordering of ensemble member `member`: (D,) host int64, a permutation of 0..D-1."""
        if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or member < 0:
            raise ValueError(f"member must be an integer >= 0, got {member!r}")
        D = self.config["D"]
        return np.random.default_rng([self.config["seed"], 2, int(member)]).permutation(D)

    def init_bias(self, x):
        """Set b to the logit of each pixel's mean in data x (B, D): a good start for training."""
        return init_pixel_bias(self, x)

    def _to_model(self, x):
        return to_device(x, self.device)

    def loss_and_grads(self, x):
        """The order-agnostic training loss of x (B, D) and the gradients of every parameter.

        The loss is the mean over the batch of the rescaled masked loss (module docstring) with
        masks drawn from ``self._rng`` on the host: a stochastic estimate, in nats per example,
        of the mean over orderings of -log p_o(x).  Gradients are new arrays on every call."""
        x = self._to_model(x)
        _check_input(self.params, x)
        m = to_device(draw_masks(self._rng, x.shape[0], self.config["D"]).astype(self.dtype), self.device)
        loss, cache = forward(self.params, x, m, self.activation)
        return float(loss), backward(1.0, cache)

    def log_prob(self, x, member=0):
        """log p_o(x) in nats, exact under o = ordering(member), shape (B,), for binary x (B, D)."""
        return log_prob_in_order(self.params, self._to_model(x), self.ordering(member), self.activation)

    def conditionals(self, x, member=0):
        """p(x_j = 1 | the dimensions before j in ordering(member)) for every j: (B, D), dim order."""
        return sigmoid(ordered_logits(self.params, self._to_model(x), self.ordering(member), self.activation))

    def sample(self, n, seed=None, temperature=1.0, member=0):
        """n ancestral samples in ordering(member), x_{o_d} ~ Bern(sigmoid(l_{o_d} / temperature)): (n, D)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"number of samples n must be an integer >= 0, got {n!r}")
        xp = get_xp(self.params["W"])
        none = xp.zeros((n, self.config["D"]), dtype=self.dtype)
        return self.inpaint(none, none, seed=seed, member=member, temperature=temperature)

    def complete(self, x, n_given, seed=None, temperature=1.0, member=0):
        """Keep x[:, :n_given] and draw the rest: :meth:`inpaint` with the first n_given
        dimensions given in every row.  (B, D) -> (B, D)."""
        D = self.config["D"]
        if isinstance(n_given, bool) or not isinstance(n_given, (int, np.integer)) or not 0 <= n_given <= D:
            raise ValueError(f"n_given must be an integer in [0, D = {D}], got {n_given!r}")
        x = self._to_model(x)
        given = get_xp(x).zeros(x.shape, dtype=self.dtype)
        given[:, :n_given] = 1
        return self.inpaint(x, given, seed=seed, member=member, temperature=temperature)

    def inpaint(self, x, given, seed=None, member=0, temperature=1.0):
        """Keep x where `given` is 1 and sample the other dimensions: (B, D).

        Inputs: x (B, D) binary where given (its other entries are ignored); given (B, D) bool
        or 0/1, its own pattern per row.  The missing dimensions are drawn one at a time in the
        order they appear in o = ordering(member), each from p(x_j | the given dimensions and the
        ones already drawn) -- the network's conditional for that observed set, at `temperature`.
        So a row is an exact draw of p_o'(x_missing | x_given) for the ordering o' that lists the
        given dimensions first and then the missing ones in o's order (which is o itself when the
        given dimensions come first in o).

        Tricks: the first-layer pre-activation of each row is kept as a running sum, a = c +
        W (x * g) + U g, then a += x_j W_{:,j} + U_{:,j} as dimension j is drawn (O(H) per
        dimension, not a new pass); only the rows missing dimension j are computed at step j,
        and a dimension given in every row is skipped.  Uniforms are drawn on the host from
        numpy.random.default_rng(seed), one per (position in o, row), so every device agrees.
        """
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        W, U, c, V, b = (self.params[k] for k in ("W", "U", "c", "V", "b"))
        xp = get_xp(W)
        x, g = self._to_model(x), self._to_model(given)
        D = self.config["D"]
        if x.ndim != 2 or x.shape[1] != D or tuple(g.shape) != tuple(x.shape):
            raise ValueError(f"inpaint expects x and given of the same shape (B, {D}), got "
                             f"{tuple(x.shape)} and {tuple(g.shape)}")
        check_binary(g, "given")
        g = g.astype(W.dtype)
        x = xp.where(g > 0, x, 0).astype(W.dtype)                  # x * g: the missing entries cleared
        check_binary(x, "x (where given)")
        o = self.ordering(member)
        free = asnumpy(g) == 0                                     # (B, D) host: rows to draw, per dim
        B = x.shape[0]
        u = to_device(np.random.default_rng(seed).random((D, B)), self.device)  # host draws
        a = x @ W.T                                                # W (x * g)
        a += g @ U.T                                               # + U g
        a += c                                                     # + c: a_1 of the observed set
        for d, j in enumerate(o):
            rows = np.nonzero(free[:, j])[0]
            if rows.size == 0:
                continue                                           # given in every row
            r = slice(None) if rows.size == B else to_device(rows, self.device)
            h = upper_layers(self.params, activate(a[r], self.activation), self.activation)   # h_L
            p = sigmoid((h @ V[j] + b[j]) / temperature)           # p(x_j = 1 | observed so far)
            xj = (u[d][r] < p).astype(W.dtype)                     # x_j ~ Bern(p)
            x[r, j] = xj
            a[r] += xj[:, None] * W[:, j] + U[:, j]                # a += x_j W_{:,j} + U_{:,j}
        return x


# ----------------------------------------------------------------------------- helpers and checks

def num_layers(params):
    """L, the number of hidden layers: 1 + the number of W_l blocks."""
    return 1 + (params["W_l"].shape[0] if "W_l" in params else 0)


def activate(a, activation):
    """act(a): relu(a) or sigmoid(a), a new array.  (...) -> (...)."""
    return relu(a) if activation == "relu" else sigmoid(a)


def activate_(a, activation):
    """act(a) written over `a` (in place).  Returns a."""
    xp = get_xp(a)
    return xp.maximum(a, 0, out=a) if activation == "relu" else sigmoid(a, out=a)


def activate_backward(dh, h, activation):
    """da = dh act'(a), from h = act(a): 1[h > 0] for relu (ReLU'(0) = 0), h (1 - h) for sigmoid."""
    return relu_backward(dh, h) if activation == "relu" else sigmoid_backward(dh, h)


def activate_backward_(dh, h, activation):
    """:func:`activate_backward` written over `dh` (in place).  Returns dh."""
    if activation == "relu":
        dh *= h > 0
    else:
        dh *= h * (1.0 - h)
    return dh


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _check_input(params, x):
    """Raise ValueError unless x is a (B, D) binary array matching the model."""
    D = params["b"].shape[0]
    if x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"OrderlessNADE expects binary data of shape (B, {D}), got shape {tuple(x.shape)}")
    check_binary(x)


def _check_mask(m, x):
    """Raise ValueError unless m is a binary (B, D) mask like x that leaves a dimension unobserved per row."""
    if tuple(m.shape) != tuple(x.shape):
        raise ValueError(f"mask m must have the data's shape {tuple(x.shape)}, got {tuple(m.shape)}")
    check_binary(m, "mask m")
    if m.size and bool((m.sum(axis=1) >= x.shape[1]).any()):
        raise ValueError("mask m observes every dimension of some row: nothing to predict (need d < D)")


def _check_order(order, D):
    """The ordering as host int64 (D,); ValueError unless it is a permutation of 0..D-1."""
    o = np.asarray(asnumpy(order))
    if o.shape != (D,) or not np.issubdtype(o.dtype, np.integer) or not np.array_equal(np.sort(o), np.arange(D)):
        raise ValueError(f"order must be a permutation of 0..{D - 1} (shape ({D},) ints), got {o!r}")
    return o.astype(np.int64)
