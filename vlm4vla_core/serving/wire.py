"""Binary message format shared by the policy server and its simulator clients.

msgpack, extended with numpy arrays and numpy scalars (dtype, shape and raw bytes),
nested freely inside dicts and lists. Tuples come back as lists, and bytes/str keep
their type. Only numpy and msgpack are imported here, so simulator environments with
an old Python/numpy stack (and no torch) can use this module on its own.
"""

import msgpack
import numpy as np

_ARRAY, _SCALAR = 1, 2  # msgpack extension type codes
_KINDS = "biufc"  # bool, signed/unsigned int, float, complex


def _dtype(arr):
    if arr.dtype.kind not in _KINDS:
        raise TypeError(f"cannot send numpy dtype {arr.dtype} (numeric and bool only)")
    return arr.dtype.str  # e.g. '<f4', '|u1': includes the byte order


def _default(obj):
    if isinstance(obj, np.ndarray):
        payload = [_dtype(obj), list(obj.shape), obj.tobytes()]  # tobytes() is C order
        return msgpack.ExtType(_ARRAY, msgpack.packb(payload, use_bin_type=True))
    if isinstance(obj, np.generic):
        arr = np.asarray(obj)
        return msgpack.ExtType(_SCALAR, msgpack.packb([_dtype(arr), arr.tobytes()], use_bin_type=True))
    raise TypeError(f"cannot send object of type {type(obj).__name__}")


def _ext_hook(code, data):
    if code == _ARRAY:
        dtype, shape, buf = msgpack.unpackb(data, raw=False)
        # Copy so the receiver gets an ordinary writable array, not a view of the message.
        flat = np.frombuffer(buf, dtype=np.dtype(dtype)) if buf else np.empty(0, np.dtype(dtype))
        return flat.reshape(shape).copy()
    if code == _SCALAR:
        dtype, buf = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buf, dtype=np.dtype(dtype))[0]
    return msgpack.ExtType(code, data)


def packb(obj):
    """Serialize ``obj`` (dicts, lists, str, bytes, numbers, numpy arrays/scalars) to bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data):
    """Inverse of :func:`packb`."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
