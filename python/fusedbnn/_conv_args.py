"""Checks and normalises the convolution arguments shared by ops, reference and layers.

A 1-D convolution is the 2-D one with a unit height, so everything is normalised to 2-D here:
``strides``/``dilations`` as ``(h, w)``, ``padding`` as "VALID", "SAME" or "EXPLICIT" with
``explicit`` = ``(top, bottom, left, right)``.
"""

import dataclasses

import numpy as np

FORMATS_2D = ("NHWC", "NCHW")
FORMATS_1D = ("NWC", "NCW")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def int_tuple(value, length, name, minimum=1):
    """``value`` (an int, or a sequence of ``length`` ints) as a tuple of ints >= ``minimum``."""
    values = (value,) * length if _is_int(value) else tuple(value) if isinstance(value, (list, tuple)) else None
    if values is None or len(values) != length or not all(_is_int(v) and v >= minimum for v in values):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int or a list of {length} such ints, got {value!r}")
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


def _padding_2d(padding):
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(
                f"padding must be 'VALID', 'SAME', an int, [pad_h, pad_w] or [[top, bottom], [left, right]], "
                f"got {padding!r}"
            )
        return padding.upper(), (0, 0, 0, 0)
    rows = None
    if _is_int(padding):
        rows = [(padding, padding)] * 2
    elif isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(_is_int(p) for p in padding):
            rows = [(p, p) for p in padding]
        elif all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(v) for v in p) for p in padding):
            rows = padding
    if rows is None or any(v < 0 for r in rows for v in r):
        raise ValueError(
            f"padding must be 'VALID', 'SAME', an int, [pad_h, pad_w] or [[top, bottom], [left, right]] "
            f"(non-negative ints), got {padding!r}"
        )
    return "EXPLICIT", tuple(int(v) for r in rows for v in r)


def conv2d_args(stride, padding, dilation, groups, data_format):
    """Normalised arguments of a 2-D convolution; ValueError naming the bad argument."""
    if data_format not in FORMATS_2D:
        raise ValueError(f"data_format must be one of {FORMATS_2D}, got {data_format!r}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    mode, explicit = _padding_2d(padding)
    return ConvArgs(
        int_tuple(stride, 2, "stride"),
        int_tuple(1 if dilation is None else dilation, 2, "dilation"),
        mode,
        explicit,
        int(groups),
        data_format == "NHWC",
    )


def _single(value, name, minimum=1):
    """An int or a one-element list, for the one spatial axis of a 1-D convolution."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return int_tuple(value, 1, name, minimum)[0]


def conv1d_args(stride, padding, dilation, groups, data_format):
    """Normalised 2-D arguments (unit height) of a 1-D convolution; padding is "VALID", "SAME", an
    int or ``[left, right]``."""
    if data_format not in FORMATS_1D:
        raise ValueError(f"data_format must be one of {FORMATS_1D}, got {data_format!r}")
    if isinstance(padding, str):
        padding_2d = padding
    elif _is_int(padding):
        padding_2d = [[0, 0], [padding, padding]]
    elif isinstance(padding, (list, tuple)) and len(padding) == 2 and all(_is_int(p) for p in padding):
        padding_2d = [[0, 0], list(padding)]
    else:
        raise ValueError(f"padding must be 'VALID', 'SAME', an int or [left, right], got {padding!r}")
    dilation = 1 if dilation is None else dilation
    return conv2d_args(
        (1, _single(stride, "stride")),
        padding_2d,
        (1, _single(dilation, "dilation")),
        groups,
        "NHWC" if data_format == "NWC" else "NCHW",
    )


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
