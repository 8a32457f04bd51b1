"""Cost of a Keras training step with fusedbnn layers: ELBO with 1, 2 and 4 samples, against the
same network of deterministic Keras layers and against the same Bayesian network built on
``fusedbnn.reference`` (unfused, plain TensorFlow sampling).

    PYTHONPATH=python python benchmarks/keras_fit.py [--rounds 15]

Method (DESIGN.md): one process, the variants timed in interleaved rounds, medians of per-round
ratios; peak TensorFlow CPU allocator bytes over one training step.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedbnn  # noqa: E402
from fusedbnn import reference  # noqa: E402
from fusedbnn.nn import Linear  # noqa: E402

BATCH, FEATURES, HIDDEN, CLASSES = 128, 784, 1024, 10


class ReferenceLinear(Linear):
    """Linear whose sampling runs on fusedbnn.reference: the unfused baseline in the same model."""

    def call(self, inputs):
        args = [
            inputs,
            self.weights_distribution.mu,
            self.weights_distribution.rho,
            self._w.draw_seed(self),
            self.bias_distribution.mu,
            self.bias_distribution.rho,
            self._b.draw_seed(self),
        ]
        return reference.linear(*args)


def mlp(layer, bayesian):
    inputs = keras.Input((FEATURES,))
    x = inputs
    for cin, cout in ((FEATURES, HIDDEN), (HIDDEN, HIDDEN)):
        x = keras.layers.ReLU()(layer(cin, cout)(x))
    outputs = layer(HIDDEN, CLASSES)(x)
    return (fusedbnn.BayesianModel if bayesian else keras.Model)(inputs, outputs)


def variants():
    data_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    built = {}
    dense = mlp(lambda cin, cout: keras.layers.Dense(cout), bayesian=False)
    dense.compile(optimizer="adam", loss=data_loss)
    built["Dense (deterministic)"] = dense
    for name, layer in (("reference", ReferenceLinear), ("fused", Linear)):
        for samples in (1, 2, 4) if name == "fused" else (1,):
            model = mlp(layer, bayesian=True)
            model.compile(optimizer="adam", loss=fusedbnn.losses.ELBOLoss(data_loss, num_samples=samples))
            built[f"{name} ELBO, num_samples={samples}"] = model
    return built


def step_seconds(model, x, y, steps=5):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def peak_bytes(model, x, y):
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    model.train_on_batch(x, y)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    models = variants()
    for model in models.values():  # trace and warm up
        step_seconds(model, x, y, steps=2)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(step_seconds(model, x, y))
    fused = np.array(times["fused ELBO, num_samples=1"])
    print(f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, batch {BATCH}, one train_on_batch step, {args.rounds} rounds")
    print(f"{'variant':<32}{'median ms':>10}{'/ fused(1)':>12}{'/ Dense':>10}{'peak MB':>10}")
    dense = np.array(times["Dense (deterministic)"])
    for name, model in models.items():
        t = np.array(times[name])
        print(
            f"{name:<32}{np.median(t) * 1e3:>10.1f}{np.median(t / fused):>12.2f}{np.median(t / dense):>10.2f}"
            f"{peak_bytes(model, x, y) / 2**20:>10.1f}"
        )


if __name__ == "__main__":
    main()
