"""Which engine ops.conv2d should use where: the in-op convolution ("fused") against the kernel
sampled by the fused op and convolved by TensorFlow ("tensorflow"), forward+backward.

    PYTHONPATH=python python benchmarks/conv_engines.py [--pairs 9]

Same method as fusedbnn.bench: interleaved rounds in one process, median of per-round ratios.
"""

import argparse
import statistics

import numpy as np
import tensorflow as tf

from fusedbnn import bench, ops

# (name, x shape, kernel shape, conv2d keyword arguments); B=16, 32x32, 64 -> 64 like the standard case.
CONFIGS = [
    ("NHWC 3x3 SAME", [16, 32, 32, 64], [3, 3, 64, 64], dict(padding="SAME")),
    ("NCHW 3x3 SAME", [16, 64, 32, 32], [3, 3, 64, 64], dict(padding="SAME", data_format="NCHW")),
    ("NHWC groups=2", [16, 32, 32, 64], [3, 3, 32, 64], dict(padding="SAME", groups=2)),
    ("NHWC depthwise", [16, 32, 32, 64], [3, 3, 1, 64], dict(padding="SAME", groups=64)),
    ("NHWC dilation=2", [16, 32, 32, 64], [3, 3, 64, 64], dict(padding="SAME", dilation=2)),
    ("NHWC stride=2", [16, 32, 32, 64], [3, 3, 64, 64], dict(padding="SAME", stride=2)),
    ("NHWC 1x1", [16, 32, 32, 64], [1, 1, 64, 64], {}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'config':18s} {'fused ms':>9s} {'tf ms':>9s} {'fused/tf':>9s}")
    for name, x_shape, kernel_shape, kwargs in CONFIGS:
        x = tf.Variable(rng.normal(size=x_shape).astype(np.float32))
        w_mu, w_rho, w_seed = bench._params(kernel_shape, rng)
        b_mu, b_rho, b_seed = bench._params(kernel_shape[-1:], rng)
        trainables = [x, w_mu, w_rho, b_mu, b_rho]
        steps = {
            engine: bench._side(
                lambda engine=engine: ops.conv2d(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, engine=engine, **kwargs),
                trainables,
            ).train_step
            for engine in ("fused", "tensorflow")
        }
        for step in steps.values():
            step()
            step()
        times = {engine: [] for engine in steps}
        for round_index in range(args.pairs):
            for engine in steps if round_index % 2 == 0 else reversed(list(steps)):
                times[engine].append(bench._time_once(steps[engine], 1))
        ratio = statistics.median(f / t for f, t in zip(times["fused"], times["tensorflow"]))
        print(
            f"{name:18s} {1e3 * statistics.median(times['fused']):9.2f} "
            f"{1e3 * statistics.median(times['tensorflow']):9.2f} {ratio:8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
