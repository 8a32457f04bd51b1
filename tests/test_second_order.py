"""The fused gradients are first-order: a gradient of one of them raises an error that says so and
points at fusedbnn.reference, for every op of op_specs.SPECS that runs a fused gradient op."""

import numpy as np
import pytest
import tensorflow as tf

from op_specs import SPECS


def fused_args(spec, rng):
    args = spec.make(spec.medium, rng)
    if "engine" in args:
        args["engine"] = "fused"  # "auto" may run TensorFlow's convolution, whose gradients have every order
    return args


def gradient_penalty(fn, sources):
    """The gradient of sum(first-order gradients ** 2) of sum(output ** 2) for each source."""
    with tf.GradientTape() as outer:
        outer.watch(sources)
        with tf.GradientTape() as inner:
            inner.watch(sources)
            outputs = tf.nest.flatten(fn())
            loss = tf.add_n([tf.reduce_sum(tf.square(out)) for out in outputs])
        first = [tf.convert_to_tensor(g) for g in inner.gradient(loss, sources) if g is not None]
        penalty = tf.add_n([tf.reduce_sum(tf.square(g)) for g in first])
    return outer.gradient(penalty, sources)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.composed], ids=[s.name for s in SPECS if not s.composed])
def test_a_gradient_of_a_fused_gradient_raises_a_clear_error(spec):
    args = fused_args(spec, np.random.default_rng(0))
    sources = [args[name] for name in spec.differentiable_in(args)]
    with pytest.raises(NotImplementedError, match=r"first-order only.*fusedbnn\.reference"):
        gradient_penalty(lambda: spec.fused(**args), sources)
    # The error's advice holds: the reference differentiates twice.
    second = gradient_penalty(lambda: spec.reference(**args), sources)
    assert any(g is not None for g in second)


def first_order(fn, sources, persistent):
    with tf.GradientTape(persistent=persistent) as tape:
        tape.watch(sources)
        loss = tf.add_n([tf.reduce_sum(tf.square(out)) for out in tf.nest.flatten(fn())])
    return tape.gradient(loss, sources)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.composed], ids=[s.name for s in SPECS if not s.composed])
def test_first_order_gradients_of_a_function_under_persistent_and_nested_tapes(spec):
    # TensorFlow builds (without running) the second-order gradients of a tf.function's first-order
    # ones under a persistent or nested tape: that raised at once, failing first-order gradients.
    args = fused_args(spec, np.random.default_rng(0))
    sources = [args[name] for name in spec.differentiable_in(args)]
    traced = tf.function(lambda: spec.fused(**args))
    expected = first_order(traced, sources, persistent=False)
    with tf.GradientTape():  # an outer tape: the inner gradient must stay differentiable
        nested = first_order(traced, sources, persistent=False)
    for actual in (first_order(traced, sources, persistent=True), nested):
        for a, e in zip(actual, expected):
            if e is not None:
                np.testing.assert_array_equal(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(e).numpy())
    # A second-order gradient asked inside a function still fails, with the same advice, when it runs.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"first-order only.*fusedbnn\.reference"):
        tf.function(lambda: gradient_penalty(lambda: spec.fused(**args), sources))()
