"""What the token-sequence models share: input checks, per-token log-probabilities, sampling.

A batch is a time-major ``(p, B)`` integer array of token ids, one window of p tokens per
column, ids in [0, d) for a vocabulary of d tokens (the lecture's |V| = d).  Every model
predicts all p tokens of a window (the first from its bias or initial state), so

    logits(x)         -> (p, B, d)   f_t, which may depend on x_<t only
    log_prob(x)       -> (p, B)      log p(x_t | x_<t) in nats
    loss_and_grads(x) -> mean NLL per token (nats) and the gradient of every parameter

Subclasses implement ``logits`` and ``loss_and_grads``; sampling and log-probabilities come
from here.  ``context`` is how many tokens a model can see (its order p; None for the RNN).
"""
import numpy as np

from ..backend import asnumpy, get_xp, to_device
from ..functional import categorical_draw, check_targets, dropout_mask, token_log_prob
from ..parallel import BLOCK_BYTES, column_blocks, for_each_block
from .base import Model


class SequenceModel(Model):
    """Base of SoftmaxFVSBN, SequenceNADE, DeepNADE and RecurrentNADE."""
    vocab_size: int
    context = None            # order p of a windowed model; None when unbounded (RNN)

    def check_tokens(self, x):
        """x on the model's device, checked: a (T, B) integer array of ids in [0, d)."""
        x = to_device(x, self.device)
        if x.ndim != 2:
            raise ValueError(f"token batches are time-major (T, B) arrays, got shape {tuple(x.shape)}")
        if self.context is not None and x.shape[0] > self.context:
            raise ValueError(f"window of {x.shape[0]} tokens is longer than the model's order p = {self.context}")
        check_targets(x, self.vocab_size, name="token ids")
        return x

    def logits(self, x, out=None):
        """Output pre-activations f_t for every position, shape (T, B, d) (into `out` if given)."""
        raise NotImplementedError

    def log_prob(self, x):
        """log p(x_t | x_<t) in nats for every token, shape (T, B)."""
        x = self.check_tokens(x)
        with self.eval_mode():                      # logits into a reused buffer: no page faults
            f = self.logits(x, out=self._buffer("f_eval", (*x.shape, self.vocab_size)))
        T, B, d = f.shape
        return token_log_prob(f.reshape(T * B, d), x.reshape(T * B)).reshape(T, B)

    def loss(self, x):
        """Mean NLL per token (nats), no gradients."""
        return -float(self.log_prob(x).mean())

    def init_bias(self, ids, smoothing=1.0):
        """Set the output bias b to the log unigram frequencies of `ids` (every position).

        ids: 1-D array of training token ids.  b_v = log((n_v + smoothing) / (N + d smoothing)),
        so at the start f_t = b + (small) already predicts the unigram distribution and the
        weights need not learn word frequencies.  With Adam they would otherwise learn them
        through the direction of mean(h) in the rows of W (an H-fold faster path than b),
        which for a tied RNN also moves the input embeddings (benchmarks/README.md).
        """
        ids = np.asarray(asnumpy(ids)).ravel()
        check_targets(ids, self.vocab_size, name="token ids")
        if ids.size == 0:
            raise ValueError("init_bias needs a non-empty array of training token ids")
        counts = np.bincount(ids, minlength=self.vocab_size) + float(smoothing)
        if not counts.min() > 0:                                          # log 0 = -inf: a dead token
            raise ValueError(f"token {int(counts.argmin())} never occurs in ids; use smoothing > 0")
        logp = np.log(counts / counts.sum())                              # (d,)
        b = self.params["b"]
        b[...] = to_device(np.broadcast_to(logp, b.shape).astype(b.dtype), self.device)
        return self

    def batch_weight(self, x):
        return int(x.size)

    def _dropout_mask(self, shape):
        """An inverted-dropout mask of `shape` while training with dropout > 0, else None.

        Drawn on the host from the model's own stream ``self._rng`` (seeded apart from the
        initialisation), so a seed gives the same masks on every device.
        """
        if not (self.training and self.dropout > 0):
            return None
        return dropout_mask(shape, self.dropout, self._rng, next(iter(self.params.values())))

    def next_token_logits(self, history):
        """f for the token after `history` (T, B), shape (B, d).

        Default: re-run the window of the last (p - 1) tokens plus a placeholder and read its
        last position, which by the autoregressive property ignores the placeholder.
        Recurrent models override this with a step of their recurrence.
        """
        xp = get_xp(history)
        keep = history.shape[0] if self.context is None else min(history.shape[0], self.context - 1)
        window = xp.concatenate([history[history.shape[0] - keep:],
                                 xp.zeros((1, history.shape[1]), dtype=history.dtype)])
        with self.eval_mode():
            return self.logits(window)[-1]

    def sample(self, n, length, seed=None, temperature=1.0, top_k=None, prompt=None):
        """Ancestral samples w_t ~ softmax(f_t / temperature), shape (length, n) on the host.

        prompt: optional (T0,) or (T0, n) ids to continue; the result then starts with it.
        top_k: keep only the k most likely tokens at each step (None keeps all).
        Longer than the model's order p, a windowed model conditions on the last p - 1 tokens.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        rng = np.random.default_rng(seed)
        xp = get_xp(*self.params.values())
        if prompt is None:
            hist = np.zeros((0, n), dtype=np.int64)
        else:
            hist = np.asarray(prompt, dtype=np.int64)
            hist = np.repeat(hist[:, None], n, axis=1) if hist.ndim == 1 else hist
            check_targets(hist, self.vocab_size, name="prompt ids")
        out = [hist]
        history = to_device(hist, self.device)
        for _ in range(length - hist.shape[0]):
            w = draw_tokens(self.next_token_logits(history), rng, temperature, top_k)   # (1, n)
            out.append(w)
            history = xp.concatenate([history, to_device(w, self.device)])
        return np.concatenate(out)[:length]


# ----------------------------------------------------------------------------- shared pieces

def draw_tokens(f, rng, temperature=1.0, top_k=None):
    """One ancestral draw per row, w ~ softmax(f / temperature) over the top_k logits.

    Inputs: f (n, d) logits on any device; rng a NumPy Generator (host uniforms, so a seed
    gives the same draws on every device).  Returns host ids (1, n): one new time step.
    """
    xp = get_xp(f)
    f = f.astype(xp.float64) / temperature
    if top_k is not None:
        kth = xp.sort(f, axis=1)[:, -top_k][:, None]
        f = xp.where(f >= kth, f, -xp.inf)                # keep the k most likely tokens
    u = rng.random(f.shape[0])
    return categorical_draw(asnumpy(f), u)[None]          # inverse-cdf draw on the host


def cumsum_(a):
    """a[t] <- sum_{s<=t} a[s] along axis 0, in place.  Returns a.

    Trick: the sums over s <= t of the slide for every t at once, as a running sum
    a_t = a_{t-1} + a_t written over the input (one (B, ...) add per position, no (T, ...)
    temporary as numpy.cumsum would allocate; T is small, each slab is big).
    """
    def run(cols):                                # one block of columns: the sums are independent
        for t in range(1, a.shape[0]):
            a[t, cols] += a[t - 1, cols]
    for_each_block(run, column_blocks(a))         # on every core (scratchnade.parallel): same bits
    return a


def reverse_cumsum_(a):
    """a[s] <- sum_{t>=s} a[t] along axis 0, in place.  Returns a.

    Trick: the backward of :func:`cumsum_` (the gradient of a sum over s <= t collects every
    t >= s), as a running sum from the end written over the input, no temporary.
    """
    def run(cols):
        for s in range(a.shape[0] - 2, -1, -1):
            a[s, cols] += a[s + 1, cols]
    for_each_block(run, column_blocks(a))
    return a


def flat_rows(x, d):
    """Row index s*d + x_s of each token in a (p*d, H) view of a (p, d, H) array.  (T, B) -> (T*B,).

    Trick: the position-indexed gradient rows dV[s, x_s] of all positions become rows of ONE
    2-D array, so a single scatter-add (repeated ids accumulate) fills them, instead of one
    scatter per position.
    """
    xp = get_xp(x)
    return (xp.arange(x.shape[0])[:, None] * d + x).reshape(-1)


def grad_buffer(out, name, like):
    """out[name] when given (checked), else a new array like `like`.

    Trick: lets a backward pass write a big gradient into a caller's buffer that is reused
    across steps (no page faults of a fresh (p, d, H) array per step; the model passes
    them only when ``reuse_buffers`` is on); with out=None every call allocates.
    """
    xp = get_xp(like)
    buf = None if out is None else out.get(name)
    if buf is None:
        return xp.empty_like(like)
    if tuple(buf.shape) != tuple(like.shape) or buf.dtype != like.dtype:
        raise ValueError(f"gradient buffer {name!r} must be {like.dtype} of shape {tuple(like.shape)}")
    return buf


def output_logits(W, b, h, out=None):
    """The order-p output layer: f_t = b_t + sum_{s<=t} W_s h_s for t = 1..T.

    Inputs: W (p, d, H), b (p, d), h (T, B, H) with T <= p; out: optional (T, B, d) buffer.
    Returns f (T, B, d).

    Trick: the slide's sum over s <= t would compute W_s h_s once for every t (T^2 / 2
    products); here each G_s = W_s h_s is computed once, all T of them in one batched
    matmul (T, B, H) @ (T, H, d) written straight into f (a reused buffer if `out`), and
    the sums over s <= t are an in-place running sum (:func:`cumsum_`).

    On the host G_s is computed as it is written, W_s h_s^T (d, B), one position at a time
    into a small scratch, and copied transposed into f: at B = 32, OpenBLAS runs (d, H) x (H, B)
    1.4-1.6x faster than (B, H) x (H, d) (order-p NADE at WikiText-2 sizes, 2 threads: 48 + 6 ms
    against 68-79 ms; the whole step 0.97x the time at 2 threads, 0.98x at 1,
    benchmarks/revision_speed.py).  The copy walks column blocks on every core
    (:func:`_add_position`), and while a block of f[s] is in cache it also adds f[s-1] (the
    running sum) and then b[s-1] to f[s-1] (whose running sum is complete): the same operations
    in the same order as cumsum_ then f += b, without their two passes over f.
    """
    xp = get_xp(W, h)
    T, B, _ = h.shape
    d = W.shape[1]
    if out is not None and tuple(out.shape) != (T, B, d):
        raise ValueError(f"out must have shape {(T, B, d)}, got {tuple(out.shape)}")
    if xp is np and B < d:
        f = np.empty((T, B, d), dtype=np.result_type(h, W)) if out is None else out
        G_s = np.empty((d, B), dtype=f.dtype)
        for s in range(T):
            np.matmul(W[s], h[s].T, out=G_s)                   # G_s = W_s h_s^T, (d, B)
            _add_position(f, G_s, b, s)                        # f_s = G_s + f_{s-1};  f_{s-1} += b_{s-1}
        f[T - 1] += b[T - 1]
        return f
    f = xp.matmul(h, W[:T].transpose(0, 2, 1), out=out)   # G_s = W_s h_s, one batched matmul
    cumsum_(f)                                             # sum_{s<=t} G_s
    f += b[:T, None]                                       # + b_t
    return f


def _add_position(f, G_s, b, s):
    """f[s] = G_s^T + f[s-1], then f[s-1] += b[s-1] (for s > 0), in column blocks of ~BLOCK_BYTES on
    every core.  f (T, B, d) C-contiguous, G_s (d, B) C-contiguous, b (p, d).

    A transposing copy reads one array along rows and writes the other along columns; NumPy's
    single pass does it at a third of the speed of a plain copy.  In blocks of columns of f[s]
    (each a run of whole rows of G_s, in cache) on two threads it is ~3x faster.
    """
    B, d = f.shape[1:]
    step = max(1, BLOCK_BYTES // (B * f.itemsize))        # columns of f[s] per block

    def run(cols):
        f[s][:, cols] = G_s[cols].T                        # G_s^T
        if s:
            f[s][:, cols] += f[s - 1][:, cols]             # + f_{s-1}: the running sum
            f[s - 1][:, cols] += b[s - 1, cols]            # f_{s-1} is complete: its bias
    for_each_block(run, [slice(i, min(i + step, d)) for i in range(0, d, step)])


def check_window(params, x, model="model"):
    """Raise ValueError unless x is a (T, B) integer array of ids in [0, d) with 1 <= T <= p,
    for a model whose output bias b is (p, d).  The pure forward functions call it."""
    p, d = params["b"].shape
    if x.ndim != 2 or not 1 <= x.shape[0] <= p:
        raise ValueError(f"{model} expects token windows of shape (T, B) with 1 <= T <= p = {p}, "
                         f"got shape {tuple(x.shape)}")
    check_targets(x, d, name="token ids")
