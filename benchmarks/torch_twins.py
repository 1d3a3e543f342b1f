"""The same equations in PyTorch, built from a scratchnade model's parameters (same initial values).

Used by benchmarks/wikitext2.py to compare speed and learning curves; never imported by the package.

    TorchRNN(model)            h_t = sigmoid(c + W_h h_{t-1} + W_x x_t),  f_t = b + W_o h_{t-1}
    TorchSequenceNADE(model)   h_t = sigmoid(c_t + sum_{s<t} V_s x_s),    f_t = b_t + sum_{s<=t} W_s h_s
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


def twin(model):
    """The PyTorch twin of a RecurrentNADE or SequenceNADE, with the same parameter values."""
    name = type(model).__name__
    if name == "RecurrentNADE":
        return TorchRNN(model)
    if name == "SequenceNADE":
        return TorchSequenceNADE(model)
    raise ValueError(f"no PyTorch twin for {name}")
