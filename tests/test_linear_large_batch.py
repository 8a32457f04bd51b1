"""Linear at a batch large enough that the backward accumulates dx in place, tile after tile, each
product cut over the threads (csrc/core/linear.cc, backward_in_stages): bit-identical gradients
whatever the number of intra-op threads. test_determinism.py covers the smaller sizes, where the
backward sums groups of tiles instead.

Each thread count runs in its own process (TensorFlow fixes its pools at start-up): this file is
also the worker, run as a script.
"""

import os
import subprocess
import sys

import numpy as np

THREADS = [1, 2, 3]


def compute(path):
    """y and the gradients of sum(y * dy) for x, w_mu and w_rho, saved to path."""
    import tensorflow as tf

    from fusedbnn import ops

    rng = np.random.default_rng(0)
    # dx is 520 x 600 floats, above the 2^18 where the backward switches to stages; 3 row tiles.
    x = tf.constant(rng.normal(size=(520, 600)).astype(np.float32))
    w_mu = tf.constant(rng.normal(0.0, 0.1, (2000, 600)).astype(np.float32))
    w_rho = tf.constant(np.full((2000, 600), -3.0, np.float32))
    dy = tf.constant(rng.normal(size=(520, 2000)).astype(np.float32))
    seed = tf.constant([5, 6], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch([x, w_mu, w_rho])
        y = ops.linear(x, w_mu, w_rho, seed)
        loss = tf.reduce_sum(y * dy)
    dx, dmu, drho = tape.gradient(loss, [x, w_mu, w_rho])
    threads = np.int64(tf.config.threading.get_intra_op_parallelism_threads())
    np.savez(path, y=y.numpy(), dx=dx.numpy(), dmu=dmu.numpy(), drho=drho.numpy(), threads=threads)


def test_large_batch_gradients_do_not_depend_on_threads(tmp_path):
    from conftest import subprocess_env

    results = {}
    for threads in THREADS:
        path = tmp_path / f"threads{threads}.npz"
        subprocess.run(
            [sys.executable, __file__, str(threads), str(path)],
            env=subprocess_env(),
            check=True,
            cwd=os.path.dirname(__file__),
        )
        results[threads] = dict(np.load(path))
        assert int(results[threads]["threads"]) == threads
    for threads in THREADS[1:]:
        for name in ("y", "dx", "dmu", "drho"):
            np.testing.assert_array_equal(
                results[threads][name], results[1][name], err_msg=f"{name}, {threads} threads"
            )


if __name__ == "__main__":
    threads, out = int(sys.argv[1]), sys.argv[2]
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    compute(out)
