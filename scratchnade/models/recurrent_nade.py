"""Recurrent NADE: the lecture's sigmoid RNN over d tokens (no dependence on the order p).

    h_0 = W_init                                  initial state            (H,)
    h_t = sigmoid(c + W_h h_{t-1} + W_x x_t)      hidden state             (H,)
    f_t = b + W_o h_{t-1}                         logits of w_t            (d,)
    w_t ~ Cat(softmax(f_t))
    loss = 1/(T B) sum_{t, j} -log softmax(f_t^j)[w_t^j]     mean NLL per token

x_t is the one-hot vector of token w_t (|V| = d), so W_x x_t is the column W_x[:, w_t].
f_t reads h_{t-1}, which has seen x_1 .. x_{t-1} only: f_1 = b + W_o W_init predicts the
first token, and the model is autoregressive by construction.  Index note: arrays are
0-based, so x[t - 1] holds x_t while h[t] holds h_t (h[0] = h_0).

Parameters:  W_init (H,), W_h (H, H), W_x (H, d), c (H,), W_o (d, H), b (d,).  Tied
(``tied=True``): W_x = W_o^T, one (d, H) array under ``W_o`` (no ``W_x`` key), whose
gradient is the sum of its input and output uses.

Batches are time-major (T, B) windows, each from h_0 = W_init as in the lecture.  Options
that change the maths (both tiers below take them):

    h_0 = h0                          carried state (B, H), truncated BPTT   (constant: dW_init = 0)
    W_x x_t  ->  m_t * W_x x_t        fixed inverted-dropout mask m_t        (B, H)
    x_t  ->  fed_t  in h_t only       the recurrence reads fed tokens; the targets w_t stay x
                                      (scheduled sampling: scratchnade.scheduled_sampling)
"""
from typing import NamedTuple

import numpy as np

from ..backend import default_device, get_xp, resolve_dtype, to_device
from ..compact import column_grad
from ..functional import (check_targets, dropout_backward, embedding, embedding_backward,
                          linear_softmax_cross_entropy, linear_softmax_cross_entropy_backward, log_softmax,
                          sigmoid, token_log_prob)
from ..scheduled_sampling import scheduled_inputs as draw_scheduled_inputs
from ..scheduled_sampling import teacher_forcing_schedule
from .sequence import SequenceModel, draw_tokens


# ----------------------------------------------------------------------------- reference (the slide)

class RNADEReferenceCache(NamedTuple):
    x: object         # (T, B) token ids: the targets w_t
    inputs: object    # (T, B) ids the recurrence read: x, or fed
    h: dict           # h[t] = h_t (B, H) for t = 0..T
    logp: dict        # logp[t] = log softmax(f_t) (B, d) for t = 1..T
    masks: object     # (T, B, H) dropout masks on W_x x_t, or None
    carried: bool     # h_0 was a carried state (no gradient into W_init)
    params: dict


def reference_forward(params, x, h0=None, masks=None, fed=None):
    """The slide's loop over t.  Returns (loss, RNADEReferenceCache).

    Inputs: x (T, B) ids; h0 (B, H) carried state or None (h_0 = W_init); masks (T, B, H)
    dropout masks on W_x x_t or None; fed (T, B) ids the recurrence reads instead of x.
    Same loss and arguments as :func:`forward` (which adds the speed).
    """
    xp = get_xp(params["W_h"], x)
    _check_input(params, x, h0, masks, fed)
    W_init, W_h, c, W_o, b = (params[k] for k in ("W_init", "W_h", "c", "W_o", "b"))
    W_x = W_o.T if is_tied(params) else params["W_x"]              # tied: W_x = W_o^T
    T, B = x.shape
    inputs = x if fed is None else fed
    h, logp = {}, {}
    h[0] = xp.broadcast_to(W_init, (B, W_h.shape[0])) if h0 is None else h0      # h_0
    loss = 0.0
    for t in range(1, T + 1):
        f = b + h[t - 1] @ W_o.T                                    # f_t = b + W_o h_{t-1}
        logp[t] = log_softmax(f)                                    # log softmax(f_t)
        loss = loss - logp[t][xp.arange(B), x[t - 1]].sum()         # -log p(w_t | w_<t)
        e = W_x[:, inputs[t - 1]].T                                 # e_t = W_x x_t: a column of W_x
        if masks is not None:
            e = e * masks[t - 1]                                    # input dropout
        h[t] = sigmoid(c + h[t - 1] @ W_h.T + e)                    # h_t
    loss = loss / (T * B)                                           # mean per token
    return loss, RNADEReferenceCache(x, inputs, h, logp, masks, h0 is not None, params)


def reference_backward(dloss, cache):
    """BPTT as min-char-rnn writes it: the reverse loop over t with dh_next.

    dh_next carries dloss/dh_t into step t; step t backpropagates f_t = b + W_o h_{t-1}
    and h_t = sigmoid(a_t), a_t = c + W_h h_{t-1} + W_x x_t, both of which read h_{t-1}.
    h_T feeds nothing in the window, so dh_next starts at 0.  Shapes: df (B, d), da (B, H).
    Returns {W_init, W_h, W_x (untied only), c, W_o, b}, the keys of :func:`backward`.
    """
    x, inputs, h, logp, masks, carried, params = cache
    xp = get_xp(params["W_h"])
    W_h, W_o = params["W_h"], params["W_o"]
    W_x = W_o.T if is_tied(params) else params["W_x"]              # tied: W_x = W_o^T
    T, B = x.shape
    dW_h, dc = xp.zeros_like(W_h), xp.zeros_like(params["c"])
    dW_o, db = xp.zeros_like(W_o), xp.zeros_like(params["b"])
    dW_x = xp.zeros_like(W_x)
    dh_next = xp.zeros_like(h[T])                                   # dloss/dh_T = 0
    for t in range(T, 0, -1):
        df = xp.exp(logp[t])                                        # softmax(f_t)
        df[xp.arange(B), x[t - 1]] -= 1.0                           # - onehot(w_t)
        df = df * (dloss / (T * B))                                 # df_t
        dW_o += df.T @ h[t - 1]                                     # dW_o += df_t h_{t-1}^T
        db += df.sum(axis=0)                                        # db += df_t
        da = dh_next * h[t] * (1.0 - h[t])                          # da_t = dh_t * h_t (1 - h_t)
        dW_h += da.T @ h[t - 1]                                     # dW_h += da_t h_{t-1}^T
        de = da if masks is None else da * masks[t - 1]             # de_t, through the dropout
        for j in range(B):                                          # one example at a time, so that
            dW_x[:, inputs[t - 1, j]] += de[j]                      # repeated tokens add: dW_x += de_t x_t^T
        dc += da.sum(axis=0)                                        # dc += da_t
        dh_next = df @ W_o + da @ W_h                               # dh_{t-1} = W_o^T df_t + W_h^T da_t
    grads = {"W_init": xp.zeros_like(params["W_init"]) if carried else dh_next.sum(axis=0),  # dh_0
             "W_h": dW_h, "c": dc, "W_o": dW_o, "b": db}
    if is_tied(params):
        grads["W_o"] = dW_o + dW_x.T                                # both uses of W_o
    else:
        grads["W_x"] = dW_x
    return grads


# ----------------------------------------------------------------------------- fast (the same maths, faster)

class RNADECache(NamedTuple):
    x: object         # (T, B) token ids: the targets
    inputs: object    # (T, B) ids fed to the recurrence: x itself, or scheduled-sampling draws
    hs: object        # (T+1, B, H) hidden states, hs[t] = h_t; hs[0] = h_0
    masks: object     # (T, B, H) dropout mask of the inputs W_x x_t, or None
    probs: object     # (T*B, d) softmax(f_t), in the logits buffer (D = softmax - onehot after backward)
    ce: object        # SoftmaxCECache of the output layer
    carried: bool     # True when h_0 was a carried state (then no gradient for W_init)
    params: dict


def forward(params, x, h0=None, masks=None, out=None, fed=None):
    """Mean NLL per token of a window, as :func:`reference_forward`.  Returns (loss, RNADECache).

    Inputs: x (T, B) ids; h0 (B, H) carried state or None (h_0 = W_init); masks (T, B, H)
    inverted-dropout mask on W_x x_t or None; out (T*B, d) optional buffer for the logits
    (overwritten by the probabilities, then by dlogits in :func:`backward`); fed (T, B) ids
    the recurrence reads instead of x (scheduled sampling; None: teacher forcing, fed = x).

    Speed.  The recurrence forces a loop over t, but only for the small (B, H) states
    (:func:`hidden_states`): the input drives W_x x_t of the whole window are one gather
    before the loop.  The output layer, which dominates at d = 33,278, leaves the loop:

        F = H_prev W_o^T + b      H_prev (T*B, H) stacks h_0 .. h_{T-1}: ONE (T*B, H) @ (H, d) matmul

    into `out` (the class reuses one (T*B, d) buffer, so no 150 MB page faults per step),
    then the softmax cross-entropy in place (F becomes softmax(F), no d-sized temporaries),
    run over ~1 MB blocks of rows on the host so that its passes stay in the cache.  The bias
    b is added in that pass, block by block, and the same pass sums the probabilities over
    the rows for db (:func:`backward`).  The logits are made in bits, F / ln 2, by scaling the
    small H_prev and b instead of the (T*B, d) buffer, so the softmax runs on exp2, twice as
    fast as exp in NumPy (:func:`scratchnade.functional.linear_softmax_cross_entropy`).  The
    target logits are a gather, never a one-hot product.
    """
    _check_input(params, x, h0, masks, fed)
    T, B = x.shape
    inputs = x if fed is None else fed
    hs = hidden_states(params, inputs, h0, masks)         # (T+1, B, H)
    H_prev = hs[:T].reshape(T * B, -1)                    # h_{t-1} for t = 1..T, stacked
    loss, ce = linear_softmax_cross_entropy(H_prev, params["W_o"], params["b"], x.reshape(T * B),
                                            out=out)      # f_t = b + W_o h_{t-1}; out becomes softmax(f_t)
    return loss, RNADECache(x, inputs, hs, masks, ce.probs, ce, h0 is not None, params)


def backward(dloss, cache, out=None, compact=False):
    """The gradients of :func:`reference_backward`, computed with whole-window matmuls.

    `out`: optional dict of preallocated gradient arrays ("W_o", and "W_x" when untied) to
    overwrite; without it (None, the default) every gradient is a new array.  compact=True
    (untied only; for scratchnade's optimizers) returns dW_x as a ``ColumnGrad``: the summed
    da_t of each distinct input token, its column (:mod:`scratchnade.compact`; ``.toarray()``
    gives the dense array's bits), so the (H, d) array is never zeroed or scattered into.
    Returns {W_init, W_h, W_x (untied only), c, W_o, b}.

        df_t     = dloss/(T B) (softmax(f_t) - onehot(w_t))          (T*B, d), in place
        db       = sum df_t;   dW_o = sum df_t h_{t-1}^T;   dh_{t-1} = W_o^T df_t   (3 ops, all t)
        da_t     = dh_t * h_t (1 - h_t)                              for t = T-1 .. 1
        dh_{t-1} += W_h^T da_t
        dW_h     = sum da_t h_{t-1}^T;  dc = sum da_t;  dW_x[:, in_t] += da_t (scatter-add)
        dW_init  = sum_j dh_0^j   (0 when h_0 was carried in)

    Speed.  Only the (B, H) chain dh -> da -> dh runs in the loop over t.  The output layer's
    three products leave it, and df is never written out whole: with s = dloss/(T B) and
    D = softmax(f) - onehot(w) (the probabilities buffer, N = T*B entries changed in place),

        df = s D,   dW_o = D^T (s H_prev),   dh_{t-1} = s W_o^T D_t   (every t at once),
        db = s (sum_n softmax(f_n) - counts(w))     (the forward's column sum)

    i.e. one (d, T*B) @ (T*B, H) matmul for dW_o (into out["W_o"] when given) and one
    (T*B, d) @ (d, H) for every dh_{t-1}, with the scale on the small (T*B, H) factors: no pass
    over the (T*B, d) buffer at all (:func:`~scratchnade.functional.linear_softmax_cross_entropy_backward`).
    dW_h and dc are one matmul and one sum over the stacked da_t, and dW_x is one scatter-add
    of all da_t into the columns in_t (repeated tokens accumulate); tied, the scatter adds
    into the rows of dW_o.  h_T feeds no f_t of this window, so da_T = 0 and x_T gets no
    gradient (in_t = x_t unless scheduled sampling fed a draw).
    """
    x, inputs, hs, masks, probs, ce, carried, params = cache
    W_h, W_o = params["W_h"], params["W_o"]
    xp = get_xp(W_h)
    T, B = x.shape
    H = W_h.shape[0]
    out = out or {}
    H_prev = hs[:T].reshape(T * B, H)
    dhs, dW_o, db = linear_softmax_cross_entropy_backward(dloss, ce, H_prev, W_o, dW=out.get("W_o"))
    dhs = dhs.reshape(T, B, H)                            # dh_{t-1} = W_o^T df_t for every t; dW_o (d, H)
    das = xp.empty((T - 1, B, H), dtype=W_h.dtype)        # das[t-1] = da_t, t = 1..T-1
    for t in range(T - 1, 0, -1):
        da = das[t - 1]
        xp.subtract(1.0, hs[t], out=da)
        da *= hs[t]                                       # h_t (1 - h_t): sigmoid'
        da *= dhs[t]                                      # da_t = dh_t * sigmoid'
        dhs[t - 1] += xp.matmul(da, W_h)                  # dh_{t-1} += W_h^T da_t
    da_flat = das.reshape((T - 1) * B, H)
    grads = {
        "W_init": xp.zeros_like(params["W_init"]) if carried else dhs[0].sum(axis=0),
        "W_h": da_flat.T @ hs[:T - 1].reshape((T - 1) * B, H),   # sum_t da_t h_{t-1}^T
        "c": da_flat.sum(axis=0),                                 # sum_t da_t
        "W_o": dW_o,
        "b": db,
    }
    du = dropout_backward(das, None if masks is None else masks[:T - 1])   # d(W_x x_t)
    if is_tied(params):                                   # input use of W_o: rows W_o[w_t]
        embedding_backward(du, inputs[:T - 1], out=dW_o)
    elif compact:                                         # the columns in_t only, repeated ids summed
        grads["W_x"] = column_grad(inputs[:T - 1].reshape(-1), du.reshape(-1, H), params["W_x"].shape)
    else:
        dW_x = out.get("W_x")
        dW_x = xp.zeros_like(params["W_x"]) if dW_x is None else _zero(dW_x)
        embedding_backward(du, inputs[:T - 1], out=dW_x.T)   # scatter-add into columns in_t
        grads["W_x"] = dW_x
    return grads


def is_tied(params):
    """True when W_x = W_o^T is shared (no separate ``W_x`` array)."""
    return "W_x" not in params


def input_embedding(params):
    """The rows E[w] = W_x x_w as a (d, H) array: W_x.T, or W_o itself when tied."""
    return params["W_o"] if is_tied(params) else params["W_x"].T


def input_drive(params, x, masks=None):
    """u_t = c + W_x x_t for every position (dropout on W_x x_t when masks is given).

    Shapes: x (T, B) ids, masks (T, B, H) or None -> u (T, B, H).  One row gather for the
    whole window (rows of W_x^T, i.e. columns of W_x), no one-hot product.
    """
    u = embedding(input_embedding(params), x)             # W_x x_t: a gather of columns
    if masks is not None:
        u *= masks                                        # input dropout
    u += params["c"]                                      # + c
    return u


def recurrence_step(W_h, h_prev, u_t, out=None):
    """h_t = sigmoid(W_h h_{t-1} + u_t) with u_t = c + W_x x_t.  Shapes: (B, H), (B, H) -> (B, H)."""
    xp = get_xp(W_h, h_prev)
    a = xp.matmul(h_prev, W_h.T, out=out)                 # W_h h_{t-1}
    a += u_t                                              # + c + W_x x_t
    return sigmoid(a, out=a)                              # h_t


def hidden_states(params, x, h0=None, masks=None):
    """Run the recurrence over a window.

    Inputs: x (T, B) ids; h0 (B, H) carried state or None for h_0 = W_init; masks (T, B, H).
    Returns hs (T+1, B, H) with hs[t] = h_t (hs[T] is the state to carry to the next window).
    Each h_t is written in place into its slot of hs: no (B, H) temporaries per step.
    """
    W_h = params["W_h"]
    xp = get_xp(W_h, x)
    T, B = x.shape
    u = input_drive(params, x, masks)                     # (T, B, H) all inputs at once
    hs = xp.empty((T + 1, B, W_h.shape[0]), dtype=W_h.dtype)
    hs[0] = params["W_init"] if h0 is None else h0        # h_0
    for t in range(1, T + 1):
        recurrence_step(W_h, hs[t - 1], u[t - 1], out=hs[t])   # h_t from h_{t-1} and x_t
    return hs


def output_logits(params, h, out=None):
    """f = b + W_o h for a stack of states.  Shapes: h (N, H) -> (N, d); `out` reuses a buffer."""
    xp = get_xp(h)
    f = xp.matmul(h, params["W_o"].T, out=out)            # W_o h: the one big matmul
    f += params["b"]                                      # + b
    return f


def scheduled_inputs(params, x, keep, u, h0=None, masks=None):
    """The tokens the recurrence reads under scheduled sampling (see
    :func:`scratchnade.scheduled_sampling.scheduled_inputs`), with this model's

        f_t = b + W_o h_{t-1};    h_t = sigmoid(c + W_h h_{t-1} + W_x in_t)

    Inputs: x (T, B) ids; keep (T, B) bool; u (T, B) uniforms; h0, masks as in
    :func:`forward`.  Returns in (T, B) ids, to pass to :func:`forward` as `fed`.
    """
    W_h = params["W_h"]
    xp = get_xp(W_h, x)
    h = xp.empty((x.shape[1], W_h.shape[0]), dtype=W_h.dtype)
    h[...] = params["W_init"] if h0 is None else h0       # h_0

    def step(h_prev, t, fed_t):
        u_t = input_drive(params, fed_t[None], None if masks is None else masks[t:t + 1])[0]
        return recurrence_step(W_h, h_prev, u_t)          # h_t from in_t

    return draw_scheduled_inputs(x, keep, u, h, lambda h_prev: output_logits(params, h_prev), step)


# ----------------------------------------------------------------------------- the class

class RecurrentNADE(SequenceModel):
    """The lecture's recurrent NADE (a sigmoid RNN language model) over d = vocab_size tokens.

    Parameters: W_init (H,), W_h (H, H), W_x (H, d) [absent when tied], c (H,), W_o (d, H), b (d,).
    Batches: (T, B) token ids, time-major; any T (the model has no order p).

    Options
    -------
    tied : W_x = W_o^T, one array under ``W_o``; its gradient sums the input and output uses.
    carry_state : False: every window starts from h_0 = W_init (the lecture).  True: truncated
        BPTT on stream batches (column j of a batch continues column j of the previous one):
        ``loss_and_grads`` starts from the previous call's last state h_T, held constant (no
        gradient into the previous window).  W_init then only gets a gradient on the first
        window after :meth:`reset_state` (it is h_0 of that window only); a change of batch
        size, dtype or device also resets.  ``logits``/``log_prob``/``loss`` stay pure: they
        always start from W_init.
    dropout : input (embedding) dropout on W_x x_t during training (``model.training``).
    init_scale : W_h, W_x, W_o ~ N(0, init_scale^2); W_init = c = b = 0 (h_0 = 0, f_1 = b).
    scheduled_sampling : None (teacher forcing), or "linear", "exponential" or
        "inverse-sigmoid": while training, step i = ``train_step`` feeds the real token with
        probability eps_i = teacher_forcing_schedule(kind, i, ss_k, ss_c, ss_min), else the
        model's own draw (see :mod:`scratchnade.scheduled_sampling`).  ``train_step`` counts
        training calls of ``loss_and_grads``; a trainer that resumes a run sets it to the steps
        already taken.

    ``loss_and_grads`` reuses its (T*B, d) logits buffer from call to call (150 MB of page
    faults saved per step at WikiText-2 size) and returns new gradient arrays, safe to keep.
    With ``model.reuse_buffers = True`` (the training loop) the W_o / W_x gradients (2 x 34 MB)
    live in buffers too, which the NEXT call overwrites.
    """
    context = None

    def __init__(self, vocab_size, H=256, tied=False, carry_state=False, dropout=0.0,
                 init_scale=0.1, seed=0, dtype=None, device=None,
                 scheduled_sampling=None, ss_k=None, ss_c=None, ss_min=0.0):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if scheduled_sampling is not None:
            teacher_forcing_schedule(scheduled_sampling, 0, ss_k, ss_c, ss_min)   # checks the options
        dt = resolve_dtype(dtype)
        rng = np.random.default_rng(seed)
        d = vocab_size
        params = {
            "W_init": np.zeros(H),                                  # h_0
            "W_h": rng.normal(0.0, init_scale, size=(H, H)),        # hidden -> hidden
            "W_x": rng.normal(0.0, init_scale, size=(H, d)),        # input -> hidden
            "c": np.zeros(H),                                       # hidden bias
            "W_o": rng.normal(0.0, init_scale, size=(d, H)),        # hidden -> output
            "b": np.zeros(d),                                       # output bias
        }
        if tied:
            del params["W_x"]                                       # W_x = W_o^T
        device = device or default_device()
        self.params = {k: to_device(v.astype(dt), device) for k, v in params.items()}
        self.vocab_size, self.H = d, H
        self.tied, self.carry_state, self.dropout = tied, carry_state, dropout
        self.config = {"vocab_size": d, "H": H, "tied": tied, "carry_state": carry_state,
                       "dropout": dropout, "init_scale": init_scale, "seed": seed, "dtype": dt.name}
        self.scheduled_sampling, self.ss_k, self.ss_c, self.ss_min = scheduled_sampling, ss_k, ss_c, ss_min
        if scheduled_sampling is not None:                 # only then: plain configs stay as they were
            self.config.update(scheduled_sampling=scheduled_sampling, ss_k=ss_k, ss_c=ss_c, ss_min=ss_min)
        self.train_step = 0                                # step i of the scheduled-sampling schedule
        self._rng = np.random.default_rng(None if seed is None else [seed, 1])  # dropout / sampling stream
        self._state = None

    # --- state and buffers ----------------------------------------------------
    def reset_state(self):
        """Forget the carried hidden state: the next window starts from h_0 = W_init."""
        self._state = None
        return self

    def to(self, device):
        self._state = None
        return super().to(device)

    def load_state_dict(self, arrays):
        self._state = None                               # a carried state belongs to the old weights
        return super().load_state_dict(arrays)

    def _initial_state(self, B):
        """The carried (B, H) state, or None (h_0 = W_init)."""
        s = self._state
        if not self.carry_state or s is None or s.shape[0] != B or s.dtype != self.dtype:
            return None
        return s

    # --- the model ------------------------------------------------------------
    def teacher_forcing(self):
        """eps at the current ``train_step``: 1.0 without a schedule or outside training."""
        if self.scheduled_sampling is None or not self.training:
            return 1.0
        return teacher_forcing_schedule(self.scheduled_sampling, self.train_step, self.ss_k, self.ss_c,
                                        self.ss_min)

    def loss_and_grads(self, x, masks=None, teacher_forcing=None, fed=None):
        """Mean NLL per token (nats) of window x (T, B) and the gradients of every parameter.

        masks: optional fixed (T, B, H) dropout mask (gradient checks); else one is drawn
        when training with dropout > 0.
        teacher_forcing: probability eps of reading the real x_t at each (t, j), else the
        model's own draw from softmax(f_t) (scheduled sampling; targets stay x).  Default:
        :meth:`teacher_forcing`.  The coins and draws come from the model's host stream, after
        the dropout mask; eps = 1 draws nothing and is plain training, bit for bit.
        fed: a fixed (T, B) array of input tokens instead (a deterministic loss, for checks).
        """
        x = self.check_tokens(x)
        T, B = x.shape
        d = self.vocab_size
        masks = self._dropout_mask((*x.shape, self.H)) if masks is None else to_device(masks, self.device)
        eps = self.teacher_forcing() if teacher_forcing is None else float(teacher_forcing)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"teacher_forcing must be a probability in [0, 1], got {eps}")
        h0 = self._initial_state(B)
        if fed is not None:
            fed = self.check_tokens(fed)
        elif eps < 1.0:
            keep = self._rng.random((T, B)) < eps                # Bernoulli(eps): feed the real token
            u = self._rng.random((T, B))                         # uniforms of the model's draws
            fed = scheduled_inputs(self.params, x, to_device(keep, self.device), to_device(u, self.device),
                                   h0, masks)
        loss, cache = forward(self.params, x, h0, masks, out=self._buffer("logits", (T * B, d)), fed=fed)
        compact = self.compact_grads and not is_tied(self.params)   # dW_x needs no (H, d) buffer
        grads = backward(1.0, cache, out=self._grad_buffers(["W_o"] if compact else ["W_o", "W_x"]),
                         compact=compact)                    # out None: new arrays
        if self.carry_state:
            self._state = cache.hs[T].copy()                 # h_T, a constant for the next window
        if self.training:
            self.train_step += 1
        return float(loss), grads

    def logits(self, x, out=None):
        """f_t for every position of x (T, B), starting from h_0 = W_init: shape (T, B, d)
        (a new array unless `out`)."""
        x = self.check_tokens(x)
        _check_input(self.params, x)
        T, B = x.shape
        hs = hidden_states(self.params, x, masks=self._dropout_mask((*x.shape, self.H)))
        out = None if out is None else out.reshape(T * B, -1)
        return output_logits(self.params, hs[:T].reshape(T * B, self.H), out).reshape(T, B, -1)

    def stream_log_prob(self, x, h0=None):
        """log p(x_t | x_<t) for a window that continues the previous one of the same stream.

        Inputs: x (T, B) ids; h0 (B, H) the state the previous window ended in, or None for
        h_0 = W_init.  Returns (logp (T, B), h_T (B, H)): pass h_T back in with the next window.
        This is the usual RNN language-model evaluation (the state runs through the whole split).
        """
        x = self.check_tokens(x)
        T, B = x.shape
        hs = hidden_states(self.params, x, None if h0 is None else to_device(h0, self.device))
        f = output_logits(self.params, hs[:T].reshape(T * B, self.H),
                          self._buffer("f_eval", (T * B, self.vocab_size)))      # (T*B, d), reused
        return token_log_prob(f, x.reshape(T * B)).reshape(T, B), hs[T]

    def next_token_logits(self, history):
        """f for the token after `history` (T, B): b + W_o h_T, shape (B, d).  O(T) per call."""
        history = self.check_tokens(history)
        hs = hidden_states(self.params, history)              # pure: from W_init every call
        return output_logits(self.params, hs[-1])

    def sample(self, n, length, seed=None, temperature=1.0, top_k=None, prompt=None):
        """Ancestral samples w_t ~ softmax(f_t / temperature), shape (length, n) on the host.

        Same arguments, draws and result as SequenceModel.sample, but the state h is carried
        from step to step: O(1) work per token instead of re-running the history.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        rng = np.random.default_rng(seed)
        xp = get_xp(*self.params.values())
        hist = np.zeros((0, n), dtype=np.int64) if prompt is None else np.asarray(prompt, dtype=np.int64)
        hist = np.repeat(hist[:, None], n, axis=1) if hist.ndim == 1 else hist
        check_targets(hist, self.vocab_size, name="prompt ids")
        if hist.ndim != 2 or hist.shape[1] != n:
            raise ValueError(f"prompt must be (T0,) or (T0, {n}) ids, got shape {hist.shape}")
        W_h = self.params["W_h"]
        h = xp.empty((n, self.H), dtype=self.dtype)
        h[...] = self.params["W_init"]                          # h_0
        out = [hist]
        for w in to_device(hist, self.device):                  # feed the prompt
            h = recurrence_step(W_h, h, input_drive(self.params, w[None])[0])
        for _ in range(length - hist.shape[0]):
            f = output_logits(self.params, h)                   # (n, d) f_t = b + W_o h_{t-1}
            w = draw_tokens(f, rng, temperature, top_k)
            out.append(w)
            h = recurrence_step(W_h, h, input_drive(self.params, to_device(w, self.device))[0])
        return np.concatenate(out)[:length]


# ----------------------------------------------------------------------------- checks and helpers

def _check_input(params, x, h0=None, masks=None, fed=None):
    """Raise ValueError unless x is a non-empty (T, B) array of ids in [0, d) and h0, masks, fed fit."""
    d, H = params["W_o"].shape
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"token batches are time-major (T, B) arrays with B >= 1, got shape {tuple(x.shape)}")
    check_targets(x, d, name="token ids")
    if fed is not None:
        if tuple(fed.shape) != tuple(x.shape):
            raise ValueError(f"fed tokens must have the shape of x {tuple(x.shape)}, got {tuple(fed.shape)}")
        check_targets(fed, d, name="fed token ids")
    if h0 is not None and tuple(h0.shape) != (x.shape[1], H):
        raise ValueError(f"carried state h0 must have shape ({x.shape[1]}, {H}), got {tuple(h0.shape)}")
    if masks is not None and tuple(masks.shape) != (*x.shape, H):
        raise ValueError(f"dropout masks must have shape {(*x.shape, H)}, got {tuple(masks.shape)}")


def _zero(a):
    """a reused buffer, zeroed in place."""
    a.fill(0)
    return a
