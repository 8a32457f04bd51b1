"""Argument checks shared by the ops, layers and losses: each error names the argument as the caller
wrote it, and says what was expected and what came."""

import math
import numbers

import numpy as np
import tensorflow as tf


def positive_int(value, name):
    """``value`` as an int, or ValueError naming ``name`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def float_tensor(value, name):
    """``value`` as a float32 tensor, or ValueError naming ``name``."""
    if value is None:
        raise ValueError(f"{name} must be a float32 tensor, got None")
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype != tf.float32:
        raise ValueError(f"{name} must be a float32 tensor, got dtype {tensor.dtype.name}")
    return tensor


def seed_tensor(seed, name):
    """``seed`` as an int32/int64 tensor of shape [2] (other integer dtypes cast to int64)."""
    if seed is None:
        raise ValueError(f"{name} must be a seed of shape [2] (two ints), got None")
    tensor = tf.convert_to_tensor(seed)
    if tensor.dtype not in (tf.int32, tf.int64):
        if not tensor.dtype.is_integer:
            raise ValueError(f"{name} must be an int32 or int64 tensor of shape [2], got dtype {tensor.dtype.name}")
        tensor = tf.cast(tensor, tf.int64)
    if not tensor.shape.is_compatible_with([2]):  # [None] and unknown ranks are checked when the op runs
        raise ValueError(f"{name} must be a seed of shape [2], got shape {tensor.shape}")
    return tensor


def float_inputs(layer, inputs):
    """A layer's inputs as float32 (its base class casts the other float types), else ValueError
    naming the layer."""
    if inputs.dtype != tf.float32:
        raise ValueError(
            f"{type(layer).__name__} layer '{layer.name}': inputs must be floating point, got dtype {inputs.dtype.name}"
        )
    return inputs


# sigma = softplus(rho) below about -87.3 is no normal float32 (TensorFlow's CPU threads flush it to
# 0): a frozen sample then loses sigma and its log density divides 0 by 0. softplus(-80) = 1.8e-35,
# with room for rho's N(rho_init, 0.1) start.
MIN_RHO_INIT = -80.0


def rho_init_value(value, name="rho_init"):
    """``value`` as a float, or ValueError naming ``name`` unless finite and at least MIN_RHO_INIT."""
    if not _is_real(value) or not MIN_RHO_INIT <= value < math.inf:
        raise ValueError(
            f"{name} must be a finite float >= {MIN_RHO_INIT:g} (sigma = softplus({name}); below about -87 "
            f"sigma is no normal float32), got {value!r}"
        )
    return float(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def finite_float(value, name):
    """``value`` as a float, or ValueError naming ``name`` unless a finite real number."""
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def positive_std(value, name="std_prior"):
    """``value`` as a float, or ValueError naming ``name`` unless a positive finite number."""
    if not _is_real(value) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def optional_seed(value, name="seed"):
    """None, or ``value`` as an int; ValueError naming ``name`` for anything else (a float would be
    truncated: 1.5 would seed as 1)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be None or an int, got {value!r}")
    return int(value)


def boolean(value, name):
    """``value`` as a bool, or ValueError naming ``name`` unless True or False (a string such as "no"
    is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def embedding_options(padding_idx, max_norm, norm_type):
    """The embedding op's attributes for its options, checked: -1 and 0.0 mean none."""
    if padding_idx is not None and (
        isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) or padding_idx < 0
    ):
        raise ValueError(f"padding_idx must be None or an int >= 0, got {padding_idx!r}")
    if max_norm is not None and not (_is_real(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be None or positive, got {max_norm!r}")
    if not (_is_real(norm_type) and 0 < norm_type < float("inf")):
        raise ValueError(f"norm_type must be a positive finite number, got {norm_type!r}")
    return {
        "padding_idx": -1 if padding_idx is None else int(padding_idx),
        "max_norm": 0.0 if max_norm is None else float(max_norm),
        "norm_type": float(norm_type),
    }


REDUCTIONS = ("mean", "sum", "sum_over_batch_size", "mean_with_sample_weight", "none", None)


def reduction(value):
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")
    return value
