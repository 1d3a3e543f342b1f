"""Perplexity of a token model on a corpus split, chunked (as trained) or with a sliding window.

Any model with ``log_prob(x) -> (p, B)`` (log p(x_t | x_<t) in nats for a time-major window x)
works. Both modes score every token of the split exactly once, so their ``tokens`` agree:

    chunked   the n = T // p segments the model trains on, plus the last T mod p tokens as one
              shorter window; token i sees the i mod p tokens before it in its segment.
    sliding   :func:`scratchnade.data.text.sliding_windows`; with stride 1 token i sees the
              min(i, p - 1) tokens before it (its full history), at p times the cost.

    nll = -(1/N) sum_i log p(w_i | history_i)      nats per token
    ppl = exp(nll)                                 perplexity
    bits = nll / ln 2                              bits per token (bits per character at char level)

    stream    recurrent models only (``model.stream_log_prob``): the split is cut into
              `batch_size` contiguous streams and the hidden state runs through each stream,
              window after window, as in the usual RNN language-model evaluation; the last
              T mod batch_size tokens are not scored.

The sliding number is the one to report against published perplexities for an order-p model: a
chunked evaluation charges the model for the short histories at the start of every segment.
For a recurrent model, stream is the standard one.
"""
import math

import numpy as np
from tqdm.auto import tqdm

from .backend import asnumpy, default_device, get_xp, to_device
from .data.text import check_ids, sliding_windows, stream_batches, window_batches
from .models.base import mode as _training_mode

MODES = ("chunked", "sliding", "stream")


def _chunked_windows(ids, p, batch_size, device, vocab_size):
    """(x, None) for the segments in order, then the T mod p leftover tokens as a (r, 1) window."""
    for x in window_batches(ids, p, batch_size, shuffle=False, device=device, vocab_size=vocab_size):
        yield x, None
    r = ids.size % p                                          # tokens the segments leave out
    if r:
        yield to_device(np.ascontiguousarray(ids[ids.size - r:, None]), device), None


def perplexity(model, ids, p=None, batch_size=64, mode="chunked", stride=1, device=None,
               progress=False):
    """Mean NLL (nats per token) and perplexity of `model` on the token ids of one split.

    Parameters
    ----------
    model : has ``log_prob(x)`` (p, B) -> (p, B); ``context`` (its order) and ``vocab_size``
            are used when present
    ids : (T,) int token ids (a corpus split)
    p : window length; default ``model.context`` (required for models without one, e.g. the RNN)
    batch_size : windows per ``log_prob`` call
    mode : "chunked", "sliding" or "stream" (see the module docstring)
    stride : sliding mode only: new tokens scored per window (1 = full history for every token)
    device : where the windows go; default the model's device
    progress : show a tqdm bar over the batches

    Returns
    -------
    dict(nll=float nats per token, ppl=exp(nll), bits=nll / ln 2, tokens=int count scored,
         mode=str, p=int, stride=int or None)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    context = getattr(model, "context", None)
    p = context if p is None else p
    if p is None:
        raise ValueError("pass the window length p: the model has no fixed order (context)")
    if context is not None and p > context:
        raise ValueError(f"window length p = {p} is longer than the model's order {context}")
    vocab_size = getattr(model, "vocab_size", None)
    device = device or getattr(model, "device", None) or default_device()
    ids = check_ids(ids, vocab_size)
    if mode == "stream":
        if not hasattr(model, "stream_log_prob"):
            raise ValueError(f"mode 'stream' needs a recurrent model; {type(model).__name__} carries no state")
        batches = stream_batches(ids, p, batch_size, device=device)
        total, count = _sum_stream_log_prob(model, batches, progress)
    else:
        if mode == "chunked":
            windows = _chunked_windows(ids, p, batch_size, device, vocab_size)
        else:
            windows = sliding_windows(ids, p, batch_size, stride, device, vocab_size)
        total, count = _sum_log_prob(model, windows, progress)
    stride = stride if mode == "sliding" else None
    nll = -total / count                                      # nats per token
    ppl = math.exp(nll) if nll < 700 else math.inf
    return dict(nll=nll, ppl=ppl, bits=nll / math.log(2), tokens=count, mode=mode, p=int(p),
                stride=stride)


def _sum_log_prob(model, windows, progress):
    """(sum of log p over the scored positions, number of scored positions), in float64."""
    total, count = 0.0, 0
    with _training_mode(model, False):
        for x, mask in tqdm(windows, desc="perplexity", unit="batch", disable=not progress, leave=False):
            lp = model.log_prob(x)                            # (p, B) log p(x_t | x_<t)
            xp = get_xp(lp)
            if mask is not None:
                lp = xp.where(mask, lp, 0.0)                  # keep the scored positions only
            total += float(asnumpy(lp.astype(xp.float64).sum()))
            count += x.size if mask is None else int(asnumpy(mask.sum()))
    return total, count


def _sum_stream_log_prob(model, batches, progress):
    """Like _sum_log_prob, carrying the hidden state from each (p, B) batch to the next."""
    total, count, h = 0.0, 0, None
    with _training_mode(model, False):
        for x in tqdm(batches, desc="perplexity", unit="batch", disable=not progress, leave=False):
            lp, h = model.stream_log_prob(x, h)                # (p, B), and the state to carry
            total += float(asnumpy(lp.astype(get_xp(lp).float64).sum()))
            count += x.size
    return total, count
