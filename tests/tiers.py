"""The two-tier check every model file's tests share: the reference pair (the slide in code) and
the fast pair give the same loss and the same gradient of every parameter."""
from scratchnade.backend import device_of, to_device, tree_to_device
from scratchnade.gradcheck import assert_grads_close, check_grads


def assert_tiers_agree(module, params, *args, dlosses=(1.0, -0.5), atol=1e-14, **kwargs):
    """``module.reference_forward / reference_backward`` against ``module.forward / backward``.

    Both forwards get ``(params, *args, **kwargs)``; for each upstream gradient in `dlosses` the
    fast pair runs afresh (a fast backward may reuse its forward's buffers).  Asserts: the loss to
    rtol 1e-10; every gradient to rtol 1e-10, or to `atol` where the whole gradient is tiny (0 in
    exact arithmetic, e.g. equal rows of W make dc vanish, or ~1e-5 from a few live ReLU units:
    then round-off of ~1e-17 in one tier is all that differs and no relative error means much);
    the gradients' keys are the parameters'; each gradient lives on its parameter's device; the
    reference cache is a NamedTuple.
    """
    ref_loss, ref_cache = module.reference_forward(params, *args, **kwargs)
    assert isinstance(ref_cache, tuple) and hasattr(ref_cache, "_fields"), "reference cache is not a NamedTuple"
    for dloss in dlosses:
        loss, cache = module.forward(params, *args, **kwargs)
        assert_grads_close(loss, ref_loss, rtol=1e-10, what="loss")
        grads, ref = module.backward(dloss, cache), module.reference_backward(dloss, ref_cache)
        assert set(grads) == set(ref) == set(params), (sorted(grads), sorted(ref), sorted(params))
        assert_grads_close(grads, ref, rtol=1e-10, atol=atol)
        for k, w in params.items():
            assert device_of(grads[k]) == device_of(ref[k]) == device_of(w), k


def on(device, *arrays):
    """Each array (or dict of arrays, or None) moved to `device`, as a list."""
    def move(a):
        if a is None:
            return None
        return tree_to_device(a, device) if isinstance(a, dict) else to_device(a, device)
    return [move(a) for a in arrays]


def assert_reference_matches_finite_differences(module, params, *args, rtol=1e-7, **kwargs):
    """``module.reference_backward`` against centred differences of ``module.reference_forward``
    (every entry of every parameter, float64), with a NamedTuple cache and the parameters' keys."""
    _, cache = module.reference_forward(params, *args, **kwargs)
    assert isinstance(cache, tuple) and hasattr(cache, "_fields"), "reference cache is not a NamedTuple"
    grads = module.reference_backward(1.0, cache)
    assert set(grads) == set(params)
    errors = check_grads(lambda: module.reference_forward(params, *args, **kwargs)[0], params, grads)
    assert max(errors.values()) < rtol, errors
