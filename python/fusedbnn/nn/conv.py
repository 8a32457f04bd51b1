"""Bayesian 1-D and 2-D convolution layers."""

import keras
import tensorflow as tf

from fusedbnn import _conv_args, _plain, ops
from fusedbnn._validation import boolean, float_inputs, positive_int
from fusedbnn.nn.base import WeightAndBiasModule


class _BayesianConv(WeightAndBiasModule):
    """The shared body of Conv1d and Conv2d: ``rank`` spatial axes, kernel ``[*kernel_size, in/groups, out]``."""

    rank = None
    _conv_fn = None
    _default_format = None

    def __init__(
        self,
        input_channels,
        output_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        data_format,
        weights_distribution,
        bias_distribution,
        use_bias,
        seed,
        estimator="reparameterization",
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self._set_estimator(estimator)
        self.input_channels = positive_int(input_channels, "input_channels")
        self.output_channels = positive_int(output_channels, "output_channels")
        self.groups = positive_int(groups, "groups")
        if self.input_channels % self.groups or self.output_channels % self.groups:
            raise ValueError(
                f"groups ({self.groups}) must divide input_channels ({self.input_channels}) and "
                f"output_channels ({self.output_channels})"
            )
        self.kernel_size = kernel_size
        self._kernel = _conv_args.int_tuple(kernel_size, self.rank, "kernel_size")
        # illia reads data_format=None as the channels-last default.
        data_format = self._default_format if data_format is None else data_format
        self.stride, self.padding, self.dilation = (_conv_args.as_config(v) for v in (stride, padding, dilation))
        self.data_format = data_format
        parse = _conv_args.conv1d_args if self.rank == 1 else _conv_args.conv2d_args
        self._args = parse(stride, padding, dilation, self.groups, data_format)
        self.use_bias = boolean(use_bias, "use_bias")
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2, axes={self._channel_axis(): self.input_channels})
        kernel_shape = (*self._kernel, self.input_channels // self.groups, self.output_channels)
        self._add_weight_and_bias(weights_distribution, bias_distribution, kernel_shape, self.output_channels)

    def _channel_axis(self):
        return -1 if self._args.channels_last else 1

    def _fused_kl_priors(self):
        # Undilated with equal strides: the kernel is sampled by the sampling op, which has the KL
        # output (the in-op convolution would draw it again, a cost inference would pay too).
        args = self._args
        if max(args.dilations) > 1 or args.strides[0] != args.strides[1]:
            return None
        return self._weight_and_bias_kl_priors()

    def _sampled_call(self, inputs, kl_priors=None):
        args = {"kl_priors": kl_priors} if kl_priors is not None else self._estimator_args()
        return self._conv_fn(
            float_inputs(self, inputs),
            *self._sampling_args(),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            data_format=self.data_format,
            **args,
        )

    def _frozen_call(self, inputs):
        x = float_inputs(self, inputs)
        w, b = self._frozen_values()
        if self.rank == 2:
            return _plain.conv2d_with_kernel(x, w, b, self._args)
        height_axis = 1 if self._args.channels_last else 2
        y = _plain.conv2d_with_kernel(tf.expand_dims(x, height_axis), w[None], b, self._args)
        return tf.squeeze(y, height_axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        first_spatial = 1 if self._args.channels_last else 2
        spatial = slice(first_spatial, first_spatial + self.rank)
        shape[spatial] = _conv_args.spatial_outputs(shape[spatial], self._kernel, self._args)
        shape[self._channel_axis()] = self.output_channels
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_channels=self.input_channels,
            output_channels=self.output_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            data_format=self.data_format,
        )
        return config


_ILLIA_DIFFERENCES = """
    Where illia's documentation is wrong, this layer does what it means:
        - the kernel has TensorFlow's layout ``[{kernel}, input_channels / groups, output_channels]``;
          the docs' ``(input_channels / groups, {kernel}, output_channels)`` only works when those
          sizes happen to agree;
        - ``groups`` must divide both channel counts (the docs test ``kernel_size % groups``);
        - ``get_config()`` returns every constructor argument (the docs drop ``use_bias``, the
          distributions and the seed).
"""


@keras.saving.register_keras_serializable(package="fusedbnn")
class Conv2d(_BayesianConv):
    # A docstring built from parts is an expression, not a docstring: assigned to __doc__ instead.
    __doc__ = """Bayesian 2-D convolution (illia's API): each unfrozen call samples the kernel and bias in
    fused ops (``fusedbnn.ops.conv2d``); the backward pass regenerates the noise.

    Args:
        input_channels, output_channels: channel counts, positive.
        kernel_size: an int or ``[kh, kw]``.
        stride, dilation: an int or ``[h, w]`` (``dilation=None`` means 1), or any form
            ``tf.nn.conv2d`` takes (``[s]``, ``[1, h, w, 1]`` for NHWC); stride > 1 together with
            dilation > 1 is allowed.
        padding: "VALID", "SAME", an int (the same on every side, as in PyTorch and illia),
            ``[pad_h, pad_w]``, ``[[top, bottom], [left, right]]`` or ``tf.nn.conv2d``'s four pairs
            (``[[0, 0], [top, bottom], [left, right], [0, 0]]`` for NHWC).
        groups: divides both channel counts; ``groups == input_channels`` is depthwise.
        data_format: "NHWC" or "NCHW" (both run on the CPU); None means "NHWC", as in illia.
        weights_distribution: GaussianDistribution of the kernel's shape, or None for the default
            prior N(0, 0.1^2).
        bias_distribution: GaussianDistribution of shape ``(output_channels,)``, or None.
        use_bias: whether to add a bias.
        seed: optional int for reproducible initial values and noise.
        estimator: "reparameterization" (default), "flipout" or "local_reparameterization" (see
            ``fusedbnn.ops.conv2d``).
    """ + _ILLIA_DIFFERENCES.format(kernel="kh, kw")

    rank = 2
    _conv_fn = staticmethod(ops.conv2d)
    _default_format = "NHWC"

    def __init__(
        self,
        input_channels,
        output_channels,
        kernel_size,
        stride=1,
        padding="VALID",
        dilation=None,
        groups=1,
        data_format="NHWC",
        weights_distribution=None,
        bias_distribution=None,
        use_bias=True,
        seed=None,
        estimator="reparameterization",
        **kwargs,
    ):
        super().__init__(
            input_channels,
            output_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            data_format,
            weights_distribution,
            bias_distribution,
            use_bias,
            seed,
            estimator,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package="fusedbnn")
class Conv1d(_BayesianConv):
    # A docstring built from parts is an expression, not a docstring: assigned to __doc__ instead.
    __doc__ = """Bayesian 1-D convolution (illia's API): each unfrozen call samples the kernel and bias in
    fused ops (``fusedbnn.ops.conv1d``); the backward pass regenerates the noise.

    Args:
        input_channels, output_channels: channel counts, positive.
        kernel_size: an int (or a one-element list).
        stride, dilation: ints, or ``tf.nn.conv1d``'s ``[s]`` and ``[1, s, 1]`` (NWC).
        padding: "VALID", "SAME", an int or ``[left, right]``.
        groups: divides both channel counts; ``groups == input_channels`` is depthwise.
        data_format: "NWC" or "NCW" (both run on the CPU); None means "NWC", as in illia.
        weights_distribution: GaussianDistribution of the kernel's shape, or None for the default
            prior N(0, 0.1^2).
        bias_distribution: GaussianDistribution of shape ``(output_channels,)``, or None.
        use_bias: whether to add a bias.
        seed: optional int for reproducible initial values and noise.
        estimator: "reparameterization" (default), "flipout" or "local_reparameterization" (see
            ``fusedbnn.ops.conv2d``).
    """ + _ILLIA_DIFFERENCES.format(kernel="k")

    rank = 1
    _conv_fn = staticmethod(ops.conv1d)
    _default_format = "NWC"

    def __init__(
        self,
        input_channels,
        output_channels,
        kernel_size,
        stride=1,
        padding="VALID",
        dilation=1,
        groups=1,
        data_format="NWC",
        weights_distribution=None,
        bias_distribution=None,
        use_bias=True,
        seed=None,
        estimator="reparameterization",
        **kwargs,
    ):
        super().__init__(
            input_channels,
            output_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            data_format,
            weights_distribution,
            bias_distribution,
            use_bias,
            seed,
            estimator,
            **kwargs,
        )
