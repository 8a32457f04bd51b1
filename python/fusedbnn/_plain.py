"""Plain-TensorFlow paths that production code needs beside the fused ops.

The frozen layers apply fixed weights, and ``ops.conv2d(engine="tensorflow")`` convolves a kernel the
fused op sampled: both use TensorFlow's own kernels here. ``fusedbnn.reference``, the test oracle,
is written separately and is imported by no production module.
"""

import math

import tensorflow as tf

from fusedbnn import _conv_args


def gaussian_log_density(x, mu, sigma):
    """Elementwise log N(x; mu, sigma)."""
    return -0.5 * math.log(2.0 * math.pi) - tf.math.log(sigma) - 0.5 * tf.square((x - mu) / sigma)


def dense(x, w, b):
    """``x @ w^T + b`` for x ``[..., in]``, w ``[out, in]`` and an optional bias ``[out]``."""
    y = tf.tensordot(x, w, axes=[[x.shape.rank - 1], [1]])
    return y if b is None else y + b  # not tf.nn.bias_add: x may be one example [in]


def _same_pads(x, window, strides):
    """TensorFlow's SAME padding of NHWC ``x`` for windows of ``window`` taps (dilation included)
    and ``strides``, as explicit ``[[top, bottom], [left, right]]``."""
    pads = []
    for axis in (0, 1):
        size, stride = tf.shape(x)[axis + 1], strides[axis]
        total = tf.maximum((-(-size // stride) - 1) * stride + window[axis] - size, 0)
        pads.append([total // 2, total - total // 2])
    return pads


def _dilated_valid_conv(x, w, dilations):
    """VALID, stride-1 convolution of NHWC ``x`` with ``w`` dilated by ``dilations``, through
    space_to_batch (as tf.nn.atrous_conv2d): each of the dilations' phases of ``x`` convolved with the
    undilated kernel. Padded at the end to whole phases; the rows that padding adds are cropped."""
    if dilations == (1, 1):
        return tf.nn.conv2d(x, w, 1, "VALID")
    ends = [(-tf.shape(x)[axis + 1]) % dilations[axis] for axis in (0, 1)]
    pads = [[0, ends[0]], [0, ends[1]]]
    y = tf.nn.conv2d(tf.space_to_batch(x, dilations, pads), w, 1, "VALID")
    return tf.batch_to_space(y, dilations, pads)


def _tf_conv2d(x, w, strides, dilations, padding):
    """``tf.nn.conv2d`` of NHWC ``x``, except where TensorFlow's CPU kernels fail: those cases run on
    explicitly padded ``x`` at stride 1 and are subsampled.
    - Unequal strides: TensorFlow 2.21's oneDNN kernels mishandle them (Conv2DBackpropFilter writes
      out of bounds and corrupts the heap; the forward returns garbage for one-channel inputs, e.g.
      x [2, 6, 5, 1], w [1, 3, 1, 3], strides [1, 3]; benchmarks/NOTES.md).
    - Dilation: the CPU gradients without oneDNN refuse it, and a kernel dilated with zero taps would
      carry a NaN or inf of ``x`` into outputs that never read it (0 * inf): space_to_batch instead.
    """
    if strides[0] == strides[1] and dilations == (1, 1):
        return tf.nn.conv2d(x, w, strides, padding)
    if padding == "SAME":
        window = [(w.shape[axis] - 1) * dilations[axis] + 1 for axis in (0, 1)]
        padding = [[0, 0], *_same_pads(x, window, strides), [0, 0]]
    if padding != "VALID":
        x = tf.pad(x, padding)
    return _dilated_valid_conv(x, w, dilations)[:, :: strides[0], :: strides[1], :]


def _conv2d_nhwc(x, w, args, native_groups):
    """Convolution of NHWC ``x`` with the kernel ``w`` [kh, kw, in/groups, out], covering what
    TensorFlow's CPU convolution refuses: dilation and unequal strides (``_tf_conv2d``) and, unless
    ``native_groups``, groups (one convolution per group; only oneDNN builds convolve groups in one
    op, forward and backward)."""
    out_size = _conv_args.spatial_outputs(x.shape[1:3], w.shape[:2], args)
    if None not in out_size and 0 in (x.shape[0], *out_size):
        # oneDNN mishandles empty convolutions in graphs; keep the gradients defined (zero).
        zero = 0.0 * (tf.reduce_sum(x) + tf.reduce_sum(w))
        return tf.zeros([tf.shape(x)[0], *out_size, w.shape[3]], x.dtype) + zero
    padding = args.padding
    if padding == "EXPLICIT":
        top, bottom, left, right = args.explicit
        padding = [[0, 0], [top, bottom], [left, right], [0, 0]]
    if args.groups == 1 or native_groups:
        y = _tf_conv2d(x, w, args.strides, tuple(args.dilations), padding)
    else:
        xs, ws = tf.split(x, args.groups, axis=3), tf.split(w, args.groups, axis=3)
        y = tf.concat(
            [_tf_conv2d(xg, wg, args.strides, tuple(args.dilations), padding) for xg, wg in zip(xs, ws)], axis=3
        )
    if x.shape[0] is None:
        # In a graph, an empty batch of unknown size comes out of TensorFlow's convolution with the
        # input's shape: give it the output's (a no-op for any other batch).
        shape = tf.stack([tf.shape(x)[0], *_dynamic_spatial_outputs(x, w, args), w.shape[3]])
        y = tf.ensure_shape(tf.reshape(y, shape), y.shape)
    return y


def _dynamic_spatial_outputs(x, w, args):
    """The output sizes of the spatial axes of NHWC ``x``, as tensors (``_conv_args.axis_output``'s
    arithmetic, for sizes known only when the graph runs)."""
    sizes = []
    for axis in (0, 1):
        size, stride = tf.shape(x)[axis + 1], args.strides[axis]
        if args.padding == "SAME":
            sizes.append(-(-size // stride))
        else:
            window = (w.shape[axis] - 1) * args.dilations[axis] + 1
            sizes.append((size + sum(args.explicit[2 * axis : 2 * axis + 2]) - window) // stride + 1)
    return sizes


def conv2d_with_kernel(x, w, b, args, native_groups=False):
    """Convolution of ``x`` (either layout) with a given kernel and optional bias; ``native_groups``
    lets one ``tf.nn.conv2d`` do all groups (oneDNN builds only)."""
    if not args.channels_last:
        x = tf.transpose(x, [0, 2, 3, 1])
    y = _conv2d_nhwc(x, w, args, native_groups)
    if b is not None:
        y = y + b
    return y if args.channels_last else tf.transpose(y, [0, 3, 1, 2])


def embedding_lookup(w, ids, padding_idx=None, max_norm=None, norm_type=2.0):
    """``w[ids]`` with illia's padding and max-norm, for a fixed table ``w``: rows at ``padding_idx``
    are zero, and with ``max_norm`` each row e is multiplied by ``max_norm / max(norm(e), max_norm)``.
    The norm is taken before the padding mask, so no gradient passes through a zero norm."""
    rows = tf.gather(w, ids)
    if max_norm is not None:
        norms = tf.norm(rows, ord=norm_type, axis=-1, keepdims=True)
        rows = rows * (max_norm / tf.maximum(norms, max_norm))
    if padding_idx is not None:
        keep = tf.expand_dims(tf.not_equal(ids, tf.cast(padding_idx, ids.dtype)), -1)
        rows = tf.where(keep, rows, tf.zeros_like(rows))
    return rows


def lstm_recurrence(x, w, b, initial_state=None):
    """The LSTM over ``x [B, T, E]`` with fixed ``w [E + H, 4H]`` (gates f, i, c, o) and ``b [4H]``,
    as a ``tf.while_loop``; returns ``(h_seq [B, T, H], (h_T, c_T))``."""
    hidden = tf.shape(w)[-1] // 4
    if initial_state is None:
        h = c = tf.zeros(tf.stack([tf.shape(x)[0], hidden]), x.dtype)
    else:
        h, c = initial_state
    steps = tf.shape(x)[1]
    h_seq = tf.TensorArray(x.dtype, size=steps, element_shape=h.shape)

    def step(t, h, c, h_seq):
        f, i, g, o = tf.split(tf.matmul(tf.concat([x[:, t, :], h], axis=1), w) + b, 4, axis=1)
        c = c * tf.sigmoid(f) + tf.tanh(g) * tf.sigmoid(i)
        h = tf.sigmoid(o) * tf.tanh(c)
        return t + 1, h, c, h_seq.write(t, h)

    _, h, c, h_seq = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(0), h, c, h_seq))
    h_seq = tf.transpose(h_seq.stack(), [1, 0, 2])
    h_seq.set_shape(x.shape[:2].concatenate(h.shape[1:]))  # the TensorArray drops the steps' count
    return h_seq, (h, c)
