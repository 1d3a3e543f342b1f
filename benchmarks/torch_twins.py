"""The same equations in PyTorch, built from a scratchnade model's parameters (same initial values).

Used by benchmarks/wikitext2.py and benchmarks/nade_speed.py to compare speed and learning curves; never
imported by the package.

    TorchRNN(model)            h_t = sigmoid(c + W_h h_{t-1} + W_x x_t),  f_t = b + W_o h_{t-1}
    TorchSequenceNADE(model)   h_t = sigmoid(c_t + sum_{s<t} V_s x_s),    f_t = b_t + sum_{s<=t} W_s h_s
    TorchTransformer(model)    pre-LN blocks e += Attn(LN1(e)), e += MLP(LN2(e)); f_t = b + W_o LN(e_t)
    TorchNADE(model)           h_t = sigmoid(c + W_{:,<t} x_<t),          l_t = b_t + V_t . h_t   (binary x)
"""
import numpy as np
import torch

from scratchnade.backend import asnumpy


def _parameter(a):
    return torch.nn.Parameter(torch.tensor(np.array(asnumpy(a))))


class TorchRNN(torch.nn.Module):
    """Recurrent NADE; forward(x (T, B) long, h0 or None) -> (mean NLL, last state h_T detached)."""

    def __init__(self, model):
        super().__init__()
        p = model.params
        self.tied = "W_x" not in p
        self.W_init, self.W_h, self.c = _parameter(p["W_init"]), _parameter(p["W_h"]), _parameter(p["c"])
        self.W_o, self.b = _parameter(p["W_o"]), _parameter(p["b"])
        self.E = None if self.tied else torch.nn.Parameter(torch.tensor(np.array(asnumpy(p["W_x"])).T.copy()))

    def forward(self, x, h0=None):
        T, B = x.shape
        E = self.W_o if self.tied else self.E                       # rows W_x x_t
        u = torch.nn.functional.embedding(x, E) + self.c              # (T, B, H) c + W_x x_t
        h = self.W_init.expand(B, -1) if h0 is None else h0
        hs = [h]
        for t in range(T):
            h = torch.sigmoid(torch.addmm(u[t], h, self.W_h.t()))     # h_t
            hs.append(h)
        H_prev = torch.stack(hs[:T]).reshape(T * B, -1)               # h_0 .. h_{T-1}
        f = torch.addmm(self.b, H_prev, self.W_o.t())                 # f_t = b + W_o h_{t-1}
        return torch.nn.functional.cross_entropy(f, x.reshape(-1)), hs[T].detach()


class TorchSequenceNADE(torch.nn.Module):
    """Order-p NADE; W kept as Wt[s] = W_s^T (p, H, V) so autograd's dW is one contiguous bmm."""

    def __init__(self, model):
        super().__init__()
        p = {k: np.array(asnumpy(v)) for k, v in model.params.items()}
        self.tied = "V" not in p
        self.Wt = torch.nn.Parameter(torch.tensor(p["W"].transpose(0, 2, 1).copy()))
        self.Vt = None if self.tied else torch.nn.Parameter(torch.tensor(p["V"].transpose(0, 2, 1).copy()))
        self.c, self.b = _parameter(p["c"]), _parameter(p["b"])

    def forward(self, x, h0=None):
        T = x.shape[0]
        U = self.Wt if self.tied else self.Vt                         # (p, H, V): V_s
        e = U[torch.arange(T)[:, None], :, x]                         # (T, B, H) V_s x_s
        ones = torch.ones(T, T, dtype=e.dtype)
        # running sums over positions as (T, T) @ (T, N) products: torch.cumsum along dim 0
        # of a (T, B, V) tensor (and its flip-cumsum-flip backward) costs ~4 s per step here
        a = self.c[:T, None] + (torch.tril(ones, -1) @ e.reshape(T, -1)).view_as(e)   # c_t + sum_{s<t}
        h = torch.sigmoid(a)
        G = torch.bmm(h, self.Wt[:T])                                 # W_s h_s, (T, B, V)
        f = (torch.tril(ones) @ G.reshape(T, -1)).view_as(G) + self.b[:T, None]        # b_t + sum_{s<=t}
        return torch.nn.functional.cross_entropy(f.reshape(-1, f.shape[-1]), x.reshape(-1)), None


class TorchTransformer(torch.nn.Module):
    """The decoder-only transformer of scratchnade.models.transformer, the same parameter names and
    layouts (row-vector maps y = x W + b, per-block arrays stacked on a leading L axis).

    forward(x (T, B) long, h0 ignored) -> (mean NLL, None).  Attention is torch's fused
    scaled_dot_product_attention with is_causal=True: softmax(q k^T / sqrt(d_h) + causal mask) v,
    the same maths as scratchnade.models.attention.  Dropout (``model.dropout``, while
    ``self.training``) uses torch's own masks: same rate and places (attention probabilities,
    both residual branches), other draws.
    """

    def __init__(self, model):
        super().__init__()
        for k, v in model.params.items():
            setattr(self, k, _parameter(v))
        self.names = list(model.params)
        self.heads, self.dropout = model.heads, model.dropout
        self.tied = "W_o" not in model.params

    def forward(self, x, h0=None):
        F = torch.nn.functional
        T, B = x.shape
        L, d, _ = self.W_q.shape
        h, drop = self.heads, self.dropout if self.training else 0.0
        e = torch.cat([self.s.expand(1, B, d), F.embedding(x[:-1], self.E)]) + self.P[:T, None]   # e_t
        zero = self.b_q.new_zeros(d)                                  # the keys have no bias
        for l in range(L):
            u = F.layer_norm(e, (d,), self.g1[l], self.beta1[l], eps=1e-5)                # LN1(e)
            W = torch.cat([self.W_q[l], self.W_k[l], self.W_v[l]], dim=1)               # (d, 3d)
            qkv = torch.addmm(torch.cat([self.b_q[l], zero, self.b_v[l]]), u.reshape(T * B, d), W)
            q, k, v = qkv.view(T, B, 3, h, d // h).permute(2, 1, 3, 0, 4)               # (B, h, T, d_h) each
            c = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            c = c.permute(2, 0, 1, 3).reshape(T * B, d)                                 # heads side by side
            z = torch.addmm(self.b_a[l], c, self.W_a[l]).view(T, B, d)
            e = e + F.dropout(z, drop)                                                  # a = e + m1 Attn
            u = F.layer_norm(e, (d,), self.g2[l], self.beta2[l], eps=1e-5)                # LN2(a)
            r = F.gelu(torch.addmm(self.b_1[l], u.reshape(T * B, d), self.W_1[l]), approximate="tanh")
            r = torch.addmm(self.b_2[l], r, self.W_2[l]).view(T, B, d)
            e = e + F.dropout(r, drop)                                                  # e = a + m2 MLP
        hT = F.layer_norm(e, (d,), self.g, self.beta, eps=1e-5).reshape(T * B, d)       # h_t
        f = F.linear(hT, self.E if self.tied else self.W_o, self.b)                     # f_t = b + W_o h_t
        return F.cross_entropy(f, x.reshape(-1)), None

    def grads(self):
        """{name: gradient as a NumPy array}, the keys of the scratchnade model's params."""
        return {k: getattr(self, k).grad.detach().numpy() for k in self.names}


class TorchNADE(torch.nn.Module):
    """The binary NADE of scratchnade.models.nade: parameters W (H, D), c (H,), V (D, H), b (D,),
    the same names, layouts and dtype.

    forward(x (B, D) in {0, 1}, h ignored) -> (mean over the batch of -log p(x), None), with

        a_t = c + sum_{s<t} W_{:,s} x_s      all t at once: an exclusive cumsum over the pixel axis
        h_t = sigmoid(a_t),  l_t = b_t + V_t . h_t,  -log p(x) = sum_t softplus(l_t) - x_t l_t

    The hidden pre-activations are one (B, H, D) tensor with the pixels innermost, W's own layout,
    so the running sum is a cumsum along contiguous memory (along an outer axis torch's cumsum and
    its backward were ~8x slower here).  Dense: every a_t is computed, O(BDH) like ours, without
    our skipping of the rows whose running sum did not move.
    """

    def __init__(self, model):
        super().__init__()
        for k in ("W", "c", "V", "b"):
            setattr(self, k, _parameter(model.params[k]))

    def forward(self, x, h=None):
        F = torch.nn.functional
        B = x.shape[0]
        x = x.to(self.W.dtype)
        terms = x[:, None, :-1] * self.W[:, :-1]                     # (B, H, D-1): W_{:,s} x_s, s < D
        a = F.pad(torch.cumsum(terms, dim=2), (1, 0)) + self.c[:, None]   # a_t = c + sum_{s<t} W_{:,s} x_s
        h = torch.sigmoid(a)                                          # (B, H, D) h_t
        logits = (h * self.V.t()).sum(dim=1) + self.b                 # (B, D) l_t = b_t + V_t . h_t
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")   # softplus(l) - x l
        return nll / B, None

    def grads(self):
        """{name: gradient as a NumPy array}, the keys of the scratchnade model's params."""
        return {k: getattr(self, k).grad.detach().numpy() for k in ("W", "c", "V", "b")}


def twin(model):
    """The PyTorch twin of a RecurrentNADE, SequenceNADE, Transformer or NADE, with the same parameter values."""
    name = type(model).__name__
    if name == "RecurrentNADE":
        return TorchRNN(model)
    if name == "SequenceNADE":
        return TorchSequenceNADE(model)
    if name == "Transformer":
        return TorchTransformer(model)
    if name == "NADE":
        return TorchNADE(model)
    raise ValueError(f"no PyTorch twin for {name}")
