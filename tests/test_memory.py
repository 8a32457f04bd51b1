"""Memory: training steps of each layer leave the resident memory flat after warm-up, and no op
keeps a scratch buffer past its own run (TensorFlow's CPU allocator counts every live tensor)."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

from fusedbnn import nn
from op_specs import SPEC_IDS, SPECS, large_args

PAGE = 4096
WARMUP, STEPS, CHECKPOINTS = 100, 1000, 10
# A leak of one 4 KiB page every step would grow RSS by 4 MB over STEPS: flat means below that.
FLAT_BYTES = 4 * 2**20


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def floats(shape):
    return tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))


def ids(shape, high):
    return tf.constant(np.random.default_rng(0).integers(0, high, shape), tf.int64)


# Each layer at a size where one leaked weight- or activation-sized buffer per step (64 KiB or
# more) would stand out: (layer, input).
LAYERS = {
    "Linear": (lambda: nn.Linear(256, 256, seed=1), lambda: floats([16, 256])),
    "Conv1d": (lambda: nn.Conv1d(32, 32, 5, dilation=2, seed=1), lambda: floats([8, 128, 32])),
    "Conv2d": (lambda: nn.Conv2d(16, 16, 3, padding="SAME", seed=1), lambda: floats([4, 24, 24, 16])),
    "Embedding": (lambda: nn.Embedding(4096, 64, seed=1), lambda: ids([16, 32], 4096)),
    "LSTM": (lambda: nn.LSTM(1000, 32, 64, 8, seed=1), lambda: ids([8, 16, 1], 1000)),
}


def training_step(layer):
    def step(x):
        with tf.GradientTape() as tape:
            kl, count = layer.kl_cost()
            y = tf.nest.flatten(layer(x))[0]
            loss = tf.reduce_mean(tf.square(y)) + kl / count
        variables = layer.trainable_variables
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(1e-6 * g)
        return loss

    return step


def rss_growth_after_warmup(step, x, steps):
    """RSS at evenly spaced checkpoints after warm-up; the growth from the first to the last."""
    for _ in range(WARMUP):
        step(x)
    gc.collect()
    samples = []
    for i in range(steps):
        step(x)
        if i % (steps // CHECKPOINTS) == 0 or i == steps - 1:
            samples.append(rss_bytes())
    return samples[-1] - samples[0], samples


@pytest.mark.parametrize("traced", [True, False], ids=["tf.function", "eager"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_training_steps_keep_rss_flat(name, traced):
    build, make_input = LAYERS[name]
    keras.utils.set_random_seed(0)
    layer = build()
    step = training_step(layer)
    if traced:
        step = tf.function(step, jit_compile=False)
    x = make_input()
    steps = STEPS if traced else STEPS // 3  # eager steps are Python-bound: fewer, same criterion
    growth, samples = rss_growth_after_warmup(step, x, steps)
    assert growth < FLAT_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB over {steps} steps: {samples}"


def live_bytes():
    return tf.config.experimental.get_memory_info("CPU:0")["current"]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_ops_free_their_scratch_buffers(spec):
    """Repeated forward and backward calls of each op, results dropped: the tensors TensorFlow's
    allocator counts return to the same total every time, and RSS stays flat."""
    args = large_args(spec)

    def call(_):
        return spec.outputs_and_grads(spec.fused, args)

    call(None)
    gc.collect()
    before = live_bytes()
    growth, samples = rss_growth_after_warmup(call, None, STEPS // 3)
    gc.collect()
    assert live_bytes() == before
    assert growth < FLAT_BYTES, f"{spec.name}: RSS grew by {growth / 2**20:.1f} MiB: {samples}"
