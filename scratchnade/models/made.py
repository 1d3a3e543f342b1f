"""MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray & Larochelle,
ICML 2015), for binary vectors.

An ordering o of the D dimensions (o[i] = the dimension generated at step i) gives every input d
its connectivity number, its 1-based position in o (natural order: m_0(d) = d + 1):

    m_0(d)   = i + 1  where o[i] = d                       (D,)    inputs
    m_l(k)   ~ Uniform{min_k' m_{l-1}(k'), ..., D - 1}     (H,)    hidden layer l = 1..L

A hidden unit with number m sees only inputs with m_0 <= m, and an output d only units with
m < m_0(d), so output d depends on exactly the inputs earlier in the ordering:

    M_l[k, k'] = 1[m_l(k) >= m_{l-1}(k')]                  (H, D) for l = 1, (H, H) for l > 1
    M_V[d, k]  = 1[m_0(d) > m_L(k)]                        (D, H)  output mask
    M_A[d, d'] = 1[m_0(d) > m_0(d')]                       (D, D)  direct input -> output (optional)

    h_0 = x                                                (B, D)  data in {0, 1}
    h_l = act(c_l + (W_l * M_l) h_{l-1})                   (B, H)  act = ReLU (default) or sigmoid
    l   = b + (V * M_V) h_L  [+ (A * M_A) x]               (B, D)  logits
    p(x_d = 1 | x_{o<d}) = sigmoid(l_d)
    loss = 1/B sum_b sum_d softplus(l_bd) - x_bd l_bd       mean NLL per example (nats)

'*' is the elementwise product, so a masked weight has gradient dW_l = (dpre_l^T h_{l-1}) * M_l:
exactly 0 where the mask is 0.  Parameters (NADE's naming: W input side, c hidden bias, V output,
b output bias): W1 (H, D), W2..WL (H, H), c1..cL (H,), V (D, H), b (D,), and A (D, D) when direct.
The masks are not parameters: a dict {"M1".."ML", "MV", ["MA"]} passed to every pure function.

D = 1: the range {1, ..., 0} is empty, so the lower end is clamped to D - 1 = 0: every m_l(k) = 0,
the hidden units see no input (M_1 = 0) and are constants, and the single output p(x_1 = 1) =
sigmoid(b + V h_L) depends on no input, only on the biases -- as it must.

Connectivity-agnostic training (the paper's section 4): a pool of K mask sets (each with its own
connectivity numbers and, with order shuffling, its own ordering); each training step draws one.
Every mask set is an exact autoregressive model, evaluated one at a time (``member``).
"""
from typing import NamedTuple

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, to_device
from ..functional import (bernoulli_nll, bernoulli_nll_backward, check_binary, relu, relu_backward,
                          sigmoid, sigmoid_backward)
from .base import Model, init_pixel_bias
from .sequence import grad_buffer

# act(a) and its backward dpre = dh * act'(a), both written with the unit's OUTPUT h = act(a):
# ReLU'(a) = 1[h > 0] (ReLU'(0) = 0), sigmoid'(a) = h (1 - h).
ACTIVATIONS = {"relu": (relu, relu_backward), "sigmoid": (sigmoid, sigmoid_backward)}


# ----------------------------------------------------------------------------- masks

def made_masks(D, H, layers, order, rng, direct=False):
    """The masks of one MADE and its connectivity numbers, on the host.

    Inputs: order (D,) a permutation of 0..D-1, the dimensions in generation order; rng a NumPy
    Generator for the hidden numbers m_l(k) ~ Uniform{min m_{l-1}, ..., D-1} (lower end clamped to
    D - 1, which only matters for D = 1: then every m_l(k) = 0, see the module docstring).

    Returns (masks, m): masks {"M1" (H, D), "M2".."ML" (H, H), "MV" (D, H), and "MA" (D, D) when
    direct} of 0/1 float64 (a model moves them to its device in its parameters' dtype);
    m = [m_0 (D,), m_1 (H,), ..., m_L (H,)] the integer connectivity vectors.
    """
    order = np.asarray(order)
    if order.shape != (D,) or not np.array_equal(np.sort(order), np.arange(D)):
        raise ValueError(f"order must be a permutation of 0..{D - 1}, got {order!r}")
    m0 = np.empty(D, dtype=np.int64)
    m0[order] = np.arange(1, D + 1)                                   # m_0(d) = position of d in o
    m = [m0]
    for _ in range(layers):
        lo = min(int(m[-1].min()), D - 1)
        m.append(rng.integers(lo, D, size=H))                         # m_l(k) in {lo, ..., D-1}
    masks = {f"M{l}": (m[l][:, None] >= m[l - 1][None, :]).astype(np.float64)   # M_l
             for l in range(1, layers + 1)}
    masks["MV"] = (m0[:, None] > m[layers][None, :]).astype(np.float64)           # M_V
    if direct:
        masks["MA"] = (m0[:, None] > m0[None, :]).astype(np.float64)              # M_A
    return masks, m


def ordering(D, k=0, seed=0, shuffle_order=False):
    """The generation order (D,) of mask set k: 0..D-1, or with shuffle_order a permutation
    drawn first from mask set k's stream numpy.random.default_rng([seed, 2, k])."""
    return _ordering_and_stream(D, k, seed, shuffle_order)[0]


class MaskSet(NamedTuple):
    order: np.ndarray     # (D,) dimensions in generation order
    masks: dict           # {"M1".."ML", "MV", ["MA"]} host 0/1 float64 masks
    m: list               # [m_0 (D,), m_1 (H,), ..., m_L (H,)] connectivity numbers


def mask_set(D, H, layers, k=0, seed=0, shuffle_order=False, direct=False):
    """Mask set k of a MADE, reproducible: everything is drawn from numpy.random.default_rng([seed,
    2, k]) -- the ordering first (only with shuffle_order), then the connectivity numbers."""
    order, rng = _ordering_and_stream(D, k, seed, shuffle_order)
    masks, m = made_masks(D, H, layers, order, rng, direct)
    return MaskSet(order, masks, m)


def _ordering_and_stream(D, k, seed, shuffle_order):
    rng = np.random.default_rng([seed, 2, k])                         # mask set k's own stream
    order = rng.permutation(D) if shuffle_order else np.arange(D)
    return order, rng                                                 # the stream goes on to m_l


# ----------------------------------------------------------------------------- reference (the paper)

class MADEReferenceCache(NamedTuple):
    x: object             # (B, D) the data in the parameters' dtype
    h: dict               # h[l] (B, H) hidden units, l = 1..L; h[0] = x
    logit: object         # (B, D) l = b + (V * M_V) h_L [+ (A * M_A) x]
    masks: dict
    activation: str
    params: dict


def reference_forward(params, x, masks, activation="relu"):
    """Mean NLL per example, the equations as written.  Returns (loss, MADEReferenceCache).

    Inputs: params {W1 (H, D), W2..WL (H, H), c1..cL (H,), V (D, H), b (D,), [A (D, D)]};
    x (B, D) binary; masks {M1..ML, MV, [MA]} shaped like W1..WL, V, A, on the parameters'
    device; activation "relu" or "sigmoid".  Every masked product W * M is written out where
    it is used.  Same loss as :func:`forward`.
    """
    _check_input(params, x)
    _check_masks(params, masks)
    act, _ = _activation(activation)
    L, B = num_layers(params), x.shape[0]
    x = x.astype(params["b"].dtype)
    h = {0: x}                                                                  # h_0 = x
    for l in range(1, L + 1):
        h[l] = act(params[f"c{l}"] + h[l - 1] @ (params[f"W{l}"] * masks[f"M{l}"]).T)  # h_l = act(c_l + W_l*M_l h_l-1)
    logit = params["b"] + h[L] @ (params["V"] * masks["MV"]).T                 # l = b + (V*M_V) h_L
    if "A" in params:
        logit = logit + x @ (params["A"] * masks["MA"]).T                      # + (A*M_A) x
    loss = bernoulli_nll(logit, x).sum() / B                                     # -log p(x), mean over b
    return loss, MADEReferenceCache(x, h, logit, masks, activation, params)


def reference_backward(dloss, cache):
    """Gradients of every parameter of the reference loss, by the chain rule layer by layer.

        dl     = dloss/B (sigmoid(l) - x)                  (B, D)
        db     = sum_b dl;   dV = (dl^T h_L) * M_V;   dA = (dl^T x) * M_A
        dh_L   = dl (V * M_V)                              (B, H)
        dpre_l = dh_l * act'(pre_l)                        (B, H)
        dc_l   = sum_b dpre_l;   dW_l = (dpre_l^T h_{l-1}) * M_l;   dh_{l-1} = dpre_l (W_l * M_l)

    Returns new arrays, same keys as the params.  x is data: no dh_0 is computed.
    """
    x, h, logit, masks, activation, params = cache
    _, act_backward = _activation(activation)
    L, B = len(h) - 1, x.shape[0]
    dl = bernoulli_nll_backward(dloss / B, logit, x)                           # dloss/dl  (B, D)
    grads = {"b": dl.sum(axis=0)}                                              # db
    grads["V"] = (dl.T @ h[L]) * masks["MV"]                                   # dV = (dl^T h_L) * M_V
    if "A" in params:
        grads["A"] = (dl.T @ x) * masks["MA"]                                  # dA = (dl^T x) * M_A
    dh = dl @ (params["V"] * masks["MV"])                                      # dh_L
    for l in range(L, 0, -1):
        dpre = act_backward(dh, h[l])                                          # dpre_l = dh_l * act'
        grads[f"c{l}"] = dpre.sum(axis=0)                                      # dc_l
        grads[f"W{l}"] = (dpre.T @ h[l - 1]) * masks[f"M{l}"]                  # dW_l = (dpre_l^T h_{l-1}) * M_l
        if l > 1:
            dh = dpre @ (params[f"W{l}"] * masks[f"M{l}"])                     # dh_{l-1}
    return grads


# ----------------------------------------------------------------------------- fast (same maths)

class MADECache(NamedTuple):
    x: object             # (B, D) the data in the parameters' dtype
    masked: dict          # {W1..WL, V, [A]} the masked weights W_l * M_l, V * M_V, A * M_A
    hs: list              # hs[l] (B, H) hidden units, l = 1..L; hs[0] = x
    logits: object        # (B, D)
    masks: dict
    activation: str
    params: dict


def masked_weights(params, masks, out=None):
    """{W1..WL, V, [A]}: each weight times its mask (W_l * M_l, V * M_V, A * M_A).

    out: optional dict of buffers shaped like the weights, written with out= (the model's,
    reused from step to step).  Trick: the product is formed once per forward and kept for
    the backward (the reference forms it again there) and, when sampling, for all D steps.
    The buffers matter more than the saved products: a fresh (H, D) array per weight held
    from the forward to the backward costs page faults.  Measured on a busy 2-core CPU (D =
    784, H = 500, B = 100, float32, one layer): fast pair without buffers 8.5-10 ms a step,
    slower than the reference (4-7 ms, whose products are freed at once); with them 4-6 ms.
    The step is five (B, D) x (D, H)-sized matmuls either way, so the reference is close
    to the floor already; on a GPU the saved products are saved kernel launches.
    """
    xp = get_xp(*params.values())
    names = [f"W{l}" for l in range(1, num_layers(params) + 1)] + ["V"] + (["A"] if "A" in params else [])
    mask_of = {f"W{l}": f"M{l}" for l in range(1, num_layers(params) + 1)}
    mask_of.update(V="MV", A="MA")
    return {k: xp.multiply(params[k], masks[mask_of[k]], out=None if out is None else out[k]) for k in names}


def hidden_units(params, masked, x, activation="relu"):
    """[h_0 = x, h_1, ..., h_L]: x (B, D) in the parameters' dtype -> L arrays (B, H).

    Each layer is one matmul into a new (B, H) array; the bias and the activation are then
    applied in place in it (no (B, H) temporaries for c_l + ... and act(...)).
    """
    xp = get_xp(x)
    hs = [x]
    for l in range(1, num_layers(params) + 1):
        a = hs[-1] @ masked[f"W{l}"].T                       # (W_l * M_l) h_{l-1}
        a += params[f"c{l}"]                                 # + c_l
        hs.append(_activate_(a, activation, xp))             # h_l = act(.), in place
    return hs


def logits_and_states(params, x, masks, activation="relu", out=None):
    """Everything the fast forward computes.  Inputs: x (B, D) binary (checked); out: optional
    buffers for the masked weights (see :func:`masked_weights`).

    Returns (x (B, D) in the parameters' dtype, masked weights, hs, logits (B, D)).
    """
    _check_input(params, x)
    _check_masks(params, masks)
    _activation(activation)
    x = x.astype(params["b"].dtype)
    masked = masked_weights(params, masks, out)
    hs = hidden_units(params, masked, x, activation)
    logits = hs[-1] @ masked["V"].T                          # (V * M_V) h_L
    if "A" in params:
        logits += x @ masked["A"].T                          # + (A * M_A) x
    logits += params["b"]                                    # + b
    return x, masked, hs, logits


def forward(params, x, masks, activation="relu", out=None):
    """Mean NLL per example, fast.  Inputs as :func:`reference_forward`, plus out: optional
    dict of buffers {W1..WL, V, [A]} for the masked weights, which the cache then holds (so
    call backward before the next forward into the same buffers).  Returns (loss, MADECache).

        loss = 1/B sum_b sum_d softplus(l_bd) - x_bd l_bd

    Same loss as :func:`reference_forward`.  The tricks are in :func:`masked_weights` (each
    masked weight formed once, into reused buffers) and :func:`hidden_units` (bias and
    activation in place).  Left out because it does not pay: fusing the NLL with the backward's
    sigmoid saves one elementwise pass over (B, D), small beside the (B, D) x (D, H) matmuls.
    """
    x, masked, hs, logits = logits_and_states(params, x, masks, activation, out)
    loss = bernoulli_nll(logits, x).sum() / x.shape[0]
    return loss, MADECache(x, masked, hs, logits, masks, activation, params)


def backward(dloss, cache, out=None):
    """Gradients of every parameter, fast.  Same keys as the params.

    out: optional dict of gradient buffers {W1..WL, V, [A]} (any subset; the model passes them
    when ``reuse_buffers`` is on); other gradients are new arrays.  Same maths and gradients as
    :func:`reference_backward`.  The tricks: the masked weights come from the forward's cache
    instead of being formed again; dl is built in place in the array sigmoid(l) returns; dpre_l
    overwrites dh_l in place (dh_l * 1[h_l > 0] or dh_l * h_l (1 - h_l)); each weight gradient
    is a matmul into its buffer, then masked in place.
    """
    x, masked, hs, logits, masks, activation, params = cache
    xp = get_xp(logits)
    L, B = len(hs) - 1, x.shape[0]
    dl = sigmoid(logits)                                     # p = sigmoid(l)
    dl -= x
    dl *= dloss / B                                          # dl = dloss/B (p - x)
    grads = {"b": dl.sum(axis=0)}                            # db
    grads["V"] = xp.matmul(dl.T, hs[L], out=grad_buffer(out, "V", params["V"]))
    grads["V"] *= masks["MV"]                                # dV = (dl^T h_L) * M_V
    if "A" in params:
        grads["A"] = xp.matmul(dl.T, x, out=grad_buffer(out, "A", params["A"]))
        grads["A"] *= masks["MA"]                            # dA = (dl^T x) * M_A
    dh = dl @ masked["V"]                                    # dh_L
    for l in range(L, 0, -1):
        if activation == "relu":
            xp.multiply(dh, hs[l] > 0, out=dh)               # dpre_l = dh_l * 1[h_l > 0]
        else:
            dh *= hs[l] * (1.0 - hs[l])                      # dpre_l = dh_l * h_l (1 - h_l)
        grads[f"c{l}"] = dh.sum(axis=0)                      # dc_l
        dW = grads[f"W{l}"] = xp.matmul(dh.T, hs[l - 1], out=grad_buffer(out, f"W{l}", params[f"W{l}"]))
        dW *= masks[f"M{l}"]                                 # dW_l = (dpre_l^T h_{l-1}) * M_l
        if l > 1:
            dh = dh @ masked[f"W{l}"]                        # dh_{l-1}
    return grads


# ----------------------------------------------------------------------------- the class

class MADE(Model):
    """MADE over D binary dimensions: `layers` hidden layers of H units, a pool of `masks` mask sets.

    Parameters: W1 (H, D), W2..WL (H, H), c1..cL (H,), V (D, H), b (D,), [A (D, D) when direct].
    Data: (B, D) in {0, 1}.

    Initialisation (host, numpy.random.default_rng(seed), drawn in the order W1..WL, V, A):
        W_l ~ N(0, g / fan_in)    g = 2 for ReLU (He), 1 for sigmoid; fan_in = D or H
        V, A ~ N(0, 1 / fan_in)   they feed the logits, with no ReLU after them
        c_l = 0, b = 0            (see `init_bias`)
    or every weight ~ N(0, init_scale^2) when init_scale is given.  The fan-ins count every
    input; a mask keeps about half of them, so the pre-activations start a little small.

    Mask sets: set k (k = 0..masks-1) is :func:`mask_set` (D, H, layers, k, seed, shuffle_order,
    direct), drawn from numpy.random.default_rng([seed, 2, k]): the same on every device and
    for every model with this seed.  Without shuffle_order every set uses the natural order
    1..D; with it, every set (set 0 too) draws its own ordering.  Built masks are kept per set on
    the model's device, in its dtype (not parameters: not in state_dict, rebuilt after `to`).

    Connectivity-agnostic training: with masks > 1 and ``model.training``, each
    ``loss_and_grads`` call uses set k = self._mask_rng.integers(masks) (a NumPy Generator
    attribute, so checkpoints save and resume it); ``self.member`` is the set the last call used.
    Otherwise (one set, or evaluation) it uses set 0.  ``log_prob``, ``conditionals``,
    ``sample`` and ``ordering`` take the set as ``member`` (default 0).
    """

    def __init__(self, D, H=500, layers=1, activation="relu", direct=False, masks=1,
                 shuffle_order=False, seed=0, dtype=None, init_scale=None, device=None):
        for name, value in (("D", D), ("H", H), ("layers", layers), ("masks", masks)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MADE: {name} must be an integer >= 1, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MADE: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"MADE: seed must be an integer >= 0, got {seed!r}")
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"MADE: init_scale must be > 0 (or None), got {init_scale!r}")
        D, H, layers, masks, seed = int(D), int(H), int(layers), int(masks), int(seed)
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        gain = 2.0 if activation == "relu" else 1.0

        def weight(shape, g):                                 # N(0, g / fan_in), or N(0, init_scale^2)
            std = init_scale if init_scale is not None else np.sqrt(g / shape[1])
            return rng.normal(0.0, std, size=shape)

        params = {}
        for l in range(1, layers + 1):
            params[f"W{l}"] = weight((H, D if l == 1 else H), gain)      # layer l weights
            params[f"c{l}"] = np.zeros(H)                                # layer l bias
        params["V"] = weight((D, H), 1.0)                                # hidden -> output
        params["b"] = np.zeros(D)                                        # output bias
        if direct:
            params["A"] = weight((D, D), 1.0)                            # input -> output
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.config = {"D": D, "H": H, "layers": layers, "activation": activation, "direct": bool(direct),
                       "masks": masks, "shuffle_order": bool(shuffle_order), "seed": seed, "dtype": dt.name,
                       "init_scale": None if init_scale is None else float(init_scale)}
        self.activation = activation
        self._mask_rng = np.random.default_rng([seed, 3])   # which set each training step uses
        self.member = 0
        self._mask_sets = {}                                 # k -> MaskSet (host)
        self._device_masks = {}                              # (k, device, dtype) -> masks on the device

    @property
    def n_members(self):
        """K, the number of mask sets in the pool."""
        return self.config["masks"]

    def mask_set(self, member=0):
        """Mask set `member` on the host: MaskSet(order (D,), masks {M1..ML, MV, [MA]}, m)."""
        k = self._check_member(member)
        if k not in self._mask_sets:
            c = self.config
            self._mask_sets[k] = mask_set(c["D"], c["H"], c["layers"], k, c["seed"], c["shuffle_order"],
                                          c["direct"])
        return self._mask_sets[k]

    def _masks(self, member):
        """Masks of set `member` on the model's device, in its dtype (built once, then kept)."""
        key = (member, self.device, self.dtype.str)
        if key not in self._device_masks:
            host = self.mask_set(member).masks
            self._device_masks[key] = {k: to_device(v.astype(self.dtype), self.device) for k, v in host.items()}
        return self._device_masks[key]

    def to(self, device):
        self._device_masks = {}
        return super().to(device)

    def ordering(self, member=0):
        """The dimensions (D,) of mask set `member` in generation order (a new host int array)."""
        return self.mask_set(member).order.copy()

    def init_bias(self, x):
        """Set b to the logit of each pixel's mean in data x (B, D): a good start for training."""
        return init_pixel_bias(self, x)

    def _to_model(self, x):
        return to_device(x, self.device)

    def loss_and_grads(self, x):
        """Mean NLL (nats per example) of x (B, D) and the gradients (new arrays unless
        ``reuse_buffers``: then the weight gradients live in buffers the next call overwrites).

        Uses mask set k = self._mask_rng.integers(masks) when training with masks > 1, else set 0;
        self.member records k.  The masked weights go into buffers kept on the model."""
        x = self._to_model(x)
        _check_input(self.params, x)
        k = int(self._mask_rng.integers(self.n_members)) if self.n_members > 1 and self.training else 0
        self.member = k
        weights = [name for name in self.params if name[0] in "WVA"]
        masked = {name: self._buffer("masked " + name, self.params[name].shape) for name in weights}
        loss, cache = forward(self.params, x, self._masks(k), self.activation, out=masked)
        return float(loss), backward(1.0, cache, out=self._grad_buffers(weights))

    def log_prob(self, x, member=0):
        """log p(x) in nats under mask set `member`, shape (B,), for binary x (B, D)."""
        masks = self._masks(self._check_member(member))
        xs, _, _, logits = logits_and_states(self.params, self._to_model(x), masks, self.activation)
        return -bernoulli_nll(logits, xs).sum(axis=1)

    def conditionals(self, x, member=0):
        """p(x_d = 1 | x_{o<d}) under mask set `member`, shape (B, D), in the data's dimension order."""
        masks = self._masks(self._check_member(member))
        return sigmoid(logits_and_states(self.params, self._to_model(x), masks, self.activation)[3])

    def sample(self, n, seed=None, temperature=1.0, member=0):
        """n ancestral samples (n, D) under mask set `member`, in its ordering: D steps.

        The same as :meth:`complete` of n all-zero rows with nothing given.
        """
        x = get_xp(self.params["b"]).zeros((n, self.config["D"]), dtype=self.dtype)
        return self.complete(x, 0, seed=seed, temperature=temperature, member=member)

    def complete(self, x, n_given, seed=None, temperature=1.0, member=0):
        """Keep x[:, :n_given] and draw the other dimensions in mask set `member`'s ordering.

        Inputs: x (B, D) binary (entries from n_given on are ignored).  Returns (B, D).  Exact
        ancestral sampling of p(x_rest | x_given) only when the given dimensions 0..n_given-1
        are the first n_given of the ordering (always so in the natural order); otherwise the
        conditional is not one this MADE can compute, and ValueError says so.

        Step i draws dimension d = o[i]: x_d = 1[u_i < sigmoid(l_d / temperature)], with the
        uniforms u (D, n) drawn on the host from `seed`, so every device gives the same samples.

        Tricks: the first layer's pre-activation is linear in x and x changes one dimension per
        step, so it is NADE's running sum a_1 += (W_1 * M_1)[:, d] x_d (O(nH) per step instead
        of a (n, D) x (D, H) matmul); only layers 2..L are recomputed, and only logit d of the
        output.  The masked weights are formed once for all D steps.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        member = self._check_member(member)
        order = self.mask_set(member).order
        D, L = self.config["D"], self.config["layers"]
        if not (isinstance(n_given, (int, np.integer)) and 0 <= n_given <= D):
            raise ValueError(f"MADE: n_given must be an integer in [0, D = {D}], got {n_given!r}")
        if set(order[:n_given].tolist()) != set(range(n_given)):
            raise ValueError(f"MADE: mask set {member} does not order dimensions 0..{n_given - 1} first, so it "
                             f"cannot condition on them; complete with a natural-order MADE")
        params = self.params
        xp = get_xp(params["b"])
        masked = masked_weights(params, self._masks(member))
        x = self._to_model(x)
        _check_input(params, x)
        x = x.astype(self.dtype)                                                  # a copy: x itself is untouched
        n = x.shape[0]
        u = to_device(np.random.default_rng(seed).random((D, n)), self.device)   # host draws
        a1 = xp.zeros((n, self.config["H"]), dtype=self.dtype) + params["c1"]     # a_1 = c_1 + (W_1*M_1) x, x = 0
        for i, d in enumerate(order.tolist()):
            if i < n_given:                                                       # given: only the running sum
                a1 += x[:, d][:, None] * masked["W1"][:, d]
                continue
            h = _activate_(a1.copy(), self.activation, xp)                        # h_1 given x_{o<d}
            for l in range(2, L + 1):
                h = _activate_(h @ masked[f"W{l}"].T + params[f"c{l}"], self.activation, xp)   # h_l
            logit = params["b"][d] + h @ masked["V"][d]                           # l_d = b_d + (V*M_V)_d h_L
            if "A" in params:
                logit = logit + x @ masked["A"][d]                                # + (A*M_A)_d x
            x[:, d] = u[i] < sigmoid(logit / temperature)                         # x_d ~ Bern(p_d)
            a1 += x[:, d][:, None] * masked["W1"][:, d]                           # a_1 += (W_1*M_1)_{:,d} x_d
        return x

    def _check_member(self, member):
        """member as an int, or ValueError unless it names one of the mask sets."""
        ok = isinstance(member, (int, np.integer)) and not isinstance(member, bool)
        if not (ok and 0 <= member < self.n_members):
            raise ValueError(f"MADE: member must be an integer in [0, {self.n_members}), got {member!r}")
        return int(member)


# ----------------------------------------------------------------------------- checks / helpers

def num_layers(params):
    """L, the number of hidden layers (the keys W1..WL)."""
    return sum(1 for k in params if k[0] == "W" and k[1:].isdigit())


def _activate_(a, activation, xp):
    """act(a) written into a itself: ReLU as maximum(a, 0, out=a), or the sigmoid."""
    return xp.maximum(a, 0.0, out=a) if activation == "relu" else sigmoid(a, out=a)


def _activation(name):
    """(act, act_backward) for "relu" or "sigmoid"; ValueError naming the option otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"MADE: activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _check_input(params, x):
    """Raise ValueError unless x is a (B, D) binary array matching the model."""
    D = params["b"].shape[0]
    if x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"MADE expects binary data of shape (B, {D}), got shape {tuple(x.shape)}")
    check_binary(x)


def _check_masks(params, masks):
    """Raise ValueError unless masks has exactly M1..ML, MV (and MA iff params has A), each
    shaped like its weight."""
    weight_of = {f"M{l}": f"W{l}" for l in range(1, num_layers(params) + 1)}
    weight_of["MV"] = "V"
    if "A" in params:
        weight_of["MA"] = "A"
    if set(masks) != set(weight_of):
        raise ValueError(f"MADE: masks must have keys {sorted(weight_of)}, got {sorted(masks)}")
    for name, w in weight_of.items():
        if tuple(masks[name].shape) != tuple(params[w].shape):
            raise ValueError(f"MADE: mask {name} has shape {tuple(masks[name].shape)}, "
                             f"weight {w} has {tuple(params[w].shape)}")
