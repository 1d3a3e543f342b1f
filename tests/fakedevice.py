"""A strict fake GPU for CPU-only CI.

``DeviceArray`` wraps a NumPy array but behaves like a CuPy array where it matters:
it refuses to mix with plain ``numpy.ndarray`` operands (TypeError), refuses implicit
conversion to NumPy (``np.asarray(a)`` fails), and ``np.*`` functions called on it fail.
``fake_xp`` is its array module: ``fake_xp.zeros(...)`` returns DeviceArrays, and its
functions reject host arrays except in ``asarray``/``array`` (the host -> device copy).

So model code that silently builds host arrays on the device path (``np.zeros`` inside
a model, a NumPy mask, ``np.exp`` on a parameter) fails a test on a machine without a GPU.
Registered with the package as the device ``"fake"`` (see conftest.py).
"""
import numbers

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class MixedDeviceError(TypeError):
    pass


def _unwrap(x, allow_host=False):
    """The NumPy payload of x (recursing into lists/tuples/dicts); host arrays are an error."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, np.ndarray):
        if allow_host:
            return x
        raise MixedDeviceError(
            f"host numpy array of shape {x.shape} mixed with device arrays; "
            "create it with xp (get_xp) or move it with to_device")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, allow_host) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, allow_host) for k, v in x.items()}
    return x  # Python/NumPy scalars, dtypes, slices, None, Ellipsis


def _wrap(x):
    """NumPy results back onto the device (0-d results too, as CuPy returns 0-d arrays)."""
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic) and not isinstance(x, (np.str_, np.bytes_)):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class DeviceArray(NDArrayOperatorsMixin):
    """An array on the fake device.  Arithmetic goes through ``__array_ufunc__``."""
    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    # --- the strict part -------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise MixedDeviceError("implicit conversion of a device array to NumPy is not allowed; "
                               "use scratchnade.backend.asnumpy")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = _unwrap(inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _unwrap(out)
        if "where" in kwargs:
            kwargs["where"] = _unwrap(kwargs["where"])
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:  # like CuPy, `a += b` and out= give back the very same array objects
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        raise MixedDeviceError(f"numpy.{func.__name__} called on a device array; use xp.{func.__name__}")

    # --- what CuPy arrays offer ------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: DeviceArray(self._a.T))
    flags = property(lambda self: self._a.flags)
    strides = property(lambda self: self._a.strides)

    def get(self):
        """Copy to the host (CuPy's ``ndarray.get``)."""
        return self._a.copy()

    def __getitem__(self, idx):
        return _wrap(self._a[_unwrap(idx)])

    def __setitem__(self, idx, value):
        self._a[_unwrap(idx)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __bool__(self):
        return bool(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    def item(self):
        return self._a.item()

    def tolist(self):
        raise MixedDeviceError("tolist() on a device array; use asnumpy(a).tolist()")

    def __getattr__(self, name):
        # methods such as sum, mean, max, reshape, astype, copy, fill, ravel, transpose ...
        if name.startswith("__"):  # never leak __array_interface__ & co: that is a silent host copy
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        return method


class _FakeNamespace:
    """A NumPy-like module whose functions take and return DeviceArrays."""
    _HOST_TO_DEVICE = {"asarray", "array", "ascontiguousarray"}

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name == "ndarray":
            return DeviceArray
        attr = getattr(self._module, name)
        if isinstance(attr, type) or isinstance(attr, (numbers.Number, np.dtype)):
            return attr                      # float32, int64, inf, pi, newaxis ...
        if hasattr(attr, "__name__") and type(attr).__name__ == "module":
            return _FakeNamespace(attr)      # xp.linalg, xp.random
        if isinstance(attr, np.ufunc):
            return _FakeUfunc(attr)
        if not callable(attr):
            return attr
        allow_host = name in self._HOST_TO_DEVICE

        def function(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, allow_host), **_unwrap(kwargs, allow_host)))
        function.__name__ = name
        return function


class _FakeUfunc:
    """xp.exp, xp.add ... with methods .at, .reduce, .outer working on DeviceArrays."""

    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return _wrap(self._ufunc(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        if not callable(attr):
            return attr

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        return method


fake_xp = _FakeNamespace(np)


def to_fake(a):
    """Host array -> fake device (a copy, like a transfer)."""
    return DeviceArray(np.array(a, copy=True))


def from_fake(a):
    """Fake device array -> host copy."""
    return a.get()
