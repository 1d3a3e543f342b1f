"""Safe gradients by default, for every model: ``loss_and_grads`` returns new arrays each call, so
a student who keeps two gradients keeps two different answers.  ``reuse_buffers = True`` (what the
training loop turns on) hands out the documented buffers, which the next call overwrites."""
import sys

import numpy as np
import pytest

import scratchnade.models as M
from scratchnade.backend import asnumpy, to_device
from scratchnade.gradcheck import assert_grads_close

# name -> (model factory, batch factory from a Generator, the gradients kept in reused buffers)
CASES = {
    "LinearGaussianAR": (lambda: M.LinearGaussianAR(p=2, dtype=np.float64),
                         lambda r: r.standard_normal((3, 9)), ()),
    "FVSBN vector": (lambda: M.FVSBN(5, form="vector", dtype=np.float64, init_scale=0.5),
                     lambda r: (r.random((6, 5)) < 0.5) * 1.0, ()),
    "FVSBN matrix": (lambda: M.FVSBN(5, form="matrix", dtype=np.float64, init_scale=0.5),
                     lambda r: (r.random((6, 5)) < 0.5) * 1.0, ()),
    "NADE": (lambda: M.NADE(5, H=4, dtype=np.float64, init_scale=0.5),
             lambda r: (r.random((6, 5)) < 0.5) * 1.0, ()),
    "SoftmaxFVSBN onehot": (lambda: M.SoftmaxFVSBN(7, p=4, dtype=np.float64, init_scale=0.5),
                            lambda r: r.integers(0, 7, (4, 3)), ("P",)),
    "SoftmaxFVSBN embedding": (lambda: M.SoftmaxFVSBN(7, p=4, encoding="embedding", embed_dim=3,
                                                      dtype=np.float64, init_scale=0.5),
                               lambda r: r.integers(0, 7, (4, 3)), ("P", "E")),
    "SequenceNADE": (lambda: M.SequenceNADE(7, p=4, H=3, dtype=np.float64, init_scale=0.5),
                     lambda r: r.integers(0, 7, (4, 3)), ("W", "V")),
    "SequenceNADE tied": (lambda: M.SequenceNADE(7, p=4, H=3, tied=True, dtype=np.float64, init_scale=0.5),
                          lambda r: r.integers(0, 7, (4, 3)), ("W",)),
    "DeepNADE": (lambda: M.DeepNADE(7, p=4, H=3, layers=2, dtype=np.float64, init_scale=1.0),
                 lambda r: r.integers(0, 7, (4, 3)), ("W",)),
    "RecurrentNADE": (lambda: M.RecurrentNADE(7, H=3, dtype=np.float64, init_scale=0.5),
                      lambda r: r.integers(0, 7, (4, 3)), ("W_o", "W_x")),
    "RecurrentNADE tied": (lambda: M.RecurrentNADE(7, H=3, tied=True, dtype=np.float64, init_scale=0.5),
                           lambda r: r.integers(0, 7, (4, 3)), ("W_o",)),
}


def host(grads):
    return {k: np.array(asnumpy(g)) for k, g in grads.items()}


@pytest.mark.parametrize("device", ["cpu", "fake"])
@pytest.mark.parametrize("name", CASES)
def test_gradients_are_new_arrays_unless_reuse_buffers(name, device):
    make_model, make_batch, buffered = CASES[name]
    model = make_model().to(device)
    rng = np.random.default_rng(0)
    x1, x2 = (to_device(make_batch(rng), device) for _ in range(2))
    _, g1 = model.loss_and_grads(x1)
    kept = host(g1)
    _, g2 = model.loss_and_grads(x2)
    assert_grads_close(g1, kept, rtol=0.0)                      # the second call left g1 alone
    assert any(not np.array_equal(kept[k], asnumpy(g2[k])) for k in kept)   # (it would have shown)
    if device == "cpu":
        for k in g1:
            assert not np.shares_memory(g1[k], g2[k]), k

    model.reuse_buffers = True                                  # the training loop's opt-in
    _, r1 = model.loss_and_grads(x1)
    assert_grads_close(r1, kept, rtol=1e-12)                    # the same numbers as the safe path
    _, r2 = model.loss_and_grads(x2)
    for k in buffered:                                          # the documented buffers, overwritten
        assert_grads_close(r1[k], host(g2)[k], rtol=1e-12, what=k)
        if device == "cpu":
            assert np.shares_memory(r1[k], r2[k]) and np.shares_memory(r2[k], model._buffers["d" + k]), k
    for k in set(r1) - set(buffered):                           # everything else stays new
        assert_grads_close(r1[k], kept[k], rtol=1e-12, what=k)


@pytest.mark.parametrize("name", [k for k, case in CASES.items() if case[2]])
def test_fast_backward_allocates_without_out_and_fills_out(name):
    """The pure fast pair: ``backward(dloss, cache)`` returns new arrays; with ``out=`` it writes the
    big gradients into the given arrays (what the class does when reuse_buffers is on)."""
    make_model, make_batch, buffered = CASES[name]
    model = make_model()
    module = sys.modules[type(model).__module__]
    x = make_batch(np.random.default_rng(1))
    grads = [module.backward(1.0, module.forward(model.params, x)[1]) for _ in range(2)]
    for k, g in grads[0].items():
        assert not np.shares_memory(g, grads[1][k]) and not np.shares_memory(g, model.params[k]), k
        np.testing.assert_array_equal(g, grads[1][k])
    out = {k: np.full(model.params[k].shape, np.nan) for k in buffered}
    filled = module.backward(1.0, module.forward(model.params, x)[1], out=out)
    for k in out:
        assert filled[k] is out[k], k
        np.testing.assert_array_equal(out[k], grads[0][k])
