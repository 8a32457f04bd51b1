"""Checks and normalises the convolution arguments shared by ops, reference and layers.

A 1-D convolution is the 2-D one with a unit height, so everything is normalised to 2-D here:
``strides``/``dilations`` as ``(h, w)``, ``padding`` as "VALID", "SAME" or "EXPLICIT" with
``explicit`` = ``(top, bottom, left, right)``.

Every form ``tf.nn.conv2d`` / ``tf.nn.conv1d`` take is accepted (illia passes the layers' arguments
straight to them): ``stride`` and ``dilation`` as an int or a list of 1, N or N+2 ints (N spatial
axes; the N+2 form has 1 at the batch and channel positions of ``data_format``), and for 2-D
``padding`` the explicit ``[[0, 0], [top, bottom], [left, right], [0, 0]]`` (NHWC) or
``[[0, 0], [0, 0], [top, bottom], [left, right]]`` (NCHW). fusedbnn's own shorter forms
(``[pad_h, pad_w]``, ``[[top, bottom], [left, right]]``, a 1-D int or ``[left, right]``) stay.
"""

import dataclasses

import numpy as np

FORMATS_2D = ("NHWC", "NCHW")
FORMATS_1D = ("NWC", "NCW")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def int_tuple(value, length, name):
    """``value`` (an int, or a sequence of ``length`` ints) as a tuple of positive ints."""
    values = (value,) * length if _is_int(value) else tuple(value) if isinstance(value, (list, tuple)) else None
    if values is None or len(values) != length or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(f"{name} must be a positive int or a list of {length} such ints, got {value!r}")
    return tuple(int(v) for v in values)


@dataclasses.dataclass(frozen=True)
class ConvArgs:
    """One convolution's normalised 2-D arguments."""

    strides: tuple
    dilations: tuple
    padding: str  # VALID, SAME or EXPLICIT
    explicit: tuple  # (top, bottom, left, right); zeros unless EXPLICIT
    groups: int
    channels_last: bool

    @property
    def data_format(self):
        return "NHWC" if self.channels_last else "NCHW"


def _as_list(value):
    """A list/tuple (or 1-D NumPy array, which tf.nn takes for strides) as a list, else None."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else None


def spatial_ints(value, rank, channels_last, name):
    """``stride`` / ``dilation`` as tf.nn.conv1d / conv2d take them, as a tuple of ``rank`` ints >= 1:
    an int, or a list of 1 (every spatial axis), ``rank`` (one per spatial axis) or ``rank + 2``
    positive ints, the last with 1 at the batch and channel positions of the data format."""
    fmt = ("NWC", "NCW")[not channels_last] if rank == 1 else ("NHWC", "NCHW")[not channels_last]
    axes = "w" if rank == 1 else "h, w"
    full = f"[1, {axes}, 1]" if channels_last else f"[1, 1, {axes}]"
    lengths = "1 or 3" if rank == 1 else "1, 2 or 4"
    values = [value] if _is_int(value) else _as_list(value)
    if values is None or len(values) not in (1, rank, rank + 2) or not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(
            f"{name} must be a positive int or a list of {lengths} such ints "
            f"({rank + 2} as {full} for {fmt}), got {value!r}"
        )
    if len(values) == rank + 2:
        outer = (0, rank + 1) if channels_last else (0, 1)
        if any(values[i] != 1 for i in outer):
            raise ValueError(
                f"{name} must be 1 at the batch and channel positions when given {rank + 2} ints "
                f"({full} for {fmt}), got {value!r}"
            )
        values = [v for i, v in enumerate(values) if i not in outer]
    elif len(values) == 1:
        values = values * rank
    return tuple(int(v) for v in values)


def as_config(value):
    """An argument as a layer's config keeps it: a NumPy array (as tf.nn takes for strides) as the
    list it holds, which Keras can save and load."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def _is_pair(value):
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)


def _padding_2d(padding, channels_last):
    explicit = (
        "[[0, 0], [top, bottom], [left, right], [0, 0]] for NHWC"
        if channels_last
        else "[[0, 0], [0, 0], [top, bottom], [left, right]] for NCHW"
    )
    forms = f"'VALID', 'SAME', an int, [pad_h, pad_w], [[top, bottom], [left, right]] or {explicit}"
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(f"padding must be {forms}, got {padding!r}")
        return padding.upper(), (0, 0, 0, 0)
    rows = None
    if _is_int(padding):
        rows = [(padding, padding)] * 2
    elif isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(_is_int(p) for p in padding):
            rows = [(p, p) for p in padding]
        elif all(_is_pair(p) for p in padding):
            rows = padding
    elif isinstance(padding, (list, tuple)) and len(padding) == 4 and all(_is_pair(p) for p in padding):
        outer = (0, 3) if channels_last else (0, 1)
        if any(tuple(padding[i]) != (0, 0) for i in outer):
            raise ValueError(
                f"padding must be [0, 0] at the batch and channel positions when given 4 pairs "
                f"({explicit}), got {padding!r}"
            )
        rows = [p for i, p in enumerate(padding) if i not in outer]
    if rows is None or any(v < 0 for r in rows for v in r):
        raise ValueError(f"padding must be {forms} (non-negative ints), got {padding!r}")
    return "EXPLICIT", tuple(int(v) for r in rows for v in r)


def conv2d_args(stride, padding, dilation, groups, data_format):
    """Normalised arguments of a 2-D convolution; ValueError naming the bad argument."""
    if data_format not in FORMATS_2D:
        raise ValueError(f"data_format must be one of {FORMATS_2D}, got {data_format!r}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    channels_last = data_format == "NHWC"
    mode, explicit = _padding_2d(padding, channels_last)
    return ConvArgs(
        spatial_ints(stride, 2, channels_last, "stride"),
        spatial_ints(1 if dilation is None else dilation, 2, channels_last, "dilation"),
        mode,
        explicit,
        int(groups),
        channels_last,
    )


def conv1d_args(stride, padding, dilation, groups, data_format):
    """Normalised 2-D arguments (unit height) of a 1-D convolution; ``stride``/``dilation`` an int or a
    list of 1 or 3 ints (``[1, w, 1]`` for NWC, ``[1, 1, w]`` for NCW); padding "VALID", "SAME", an
    int or ``[left, right]``."""
    if data_format not in FORMATS_1D:
        raise ValueError(f"data_format must be one of {FORMATS_1D}, got {data_format!r}")
    channels_last = data_format == "NWC"
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME"):
        padding_2d = padding
    elif _is_int(padding):
        padding_2d = [[0, 0], [padding, padding]]
    elif isinstance(padding, (list, tuple)) and len(padding) == 2 and all(_is_int(p) for p in padding):
        padding_2d = [[0, 0], list(padding)]
    else:
        raise ValueError(f"padding must be 'VALID', 'SAME', an int or [left, right], got {padding!r}")
    (stride,) = spatial_ints(stride, 1, channels_last, "stride")
    (dilation,) = spatial_ints(1 if dilation is None else dilation, 1, channels_last, "dilation")
    return conv2d_args((1, stride), padding_2d, (1, dilation), groups, "NHWC" if channels_last else "NCHW")


def axis_output(size, kernel, stride, dilation, padding, before, after):
    """(output size, leading padding) of one axis with TensorFlow's arithmetic; ValueError if negative."""
    window = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        return out, max((out - 1) * stride + window - size, 0) // 2
    padded = size + before + after
    if padded < window:
        raise ValueError(
            f"the padded input ({padded}) is smaller than the dilated kernel window ({window}): "
            "the output size would be negative"
        )
    return (padded - window) // stride + 1, before


def spatial_outputs(sizes, kernel, args):
    """The output sizes of a convolution's spatial axes (None where a size is unknown), from the
    input's ``sizes`` and the ``kernel``'s along them; ValueError where one would be negative. A 1-D
    convolution is the width axis of the unit-height 2-D one ``args`` describes."""
    first = 2 - len(sizes)
    outputs = []
    for axis, (size, taps) in enumerate(zip(sizes, kernel), first):
        if size is None or taps is None:
            outputs.append(None)
            continue
        before_after = args.explicit[2 * axis : 2 * axis + 2]
        try:
            out, _ = axis_output(size, taps, args.strides[axis], args.dilations[axis], args.padding, *before_after)
        except ValueError as error:  # named as the fused op names it
            raise ValueError(f"{('height', 'width')[axis]}: {error}") from None
        outputs.append(out)
    return outputs
