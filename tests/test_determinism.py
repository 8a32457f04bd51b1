"""Determinism: the same seed gives bit-identical outputs and gradients whatever the number of
intra-op threads (1, 2, 8), and so whatever the way TensorFlow's pool shards the work.

Each thread count runs in its own process (TensorFlow fixes its pools at start-up): this file is
also the worker, run as a script. Every op of op_specs.SPECS is checked at sizes that cut the work
into many units, eagerly and inside tf.function.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

THREADS = [1, 2, 8]


def compute_all(path):
    """Every spec's outputs and gradients at its large sizes, eager and traced, saved to path."""
    import dataclasses

    import tensorflow as tf

    from conftest import run
    from op_specs import SPECS, large_args

    results = {}
    # Linear with dx above 2^18 floats as well: its backward accumulates dx in place over 3 row tiles,
    # each stage cut over the threads (csrc/core/linear.cc, backward_in_stages).
    linear = next(s for s in SPECS if s.name == "linear")
    large_batch = dataclasses.replace(
        linear, name="linear-large-batch", large=dict(linear.large, batch=[520], n_in=600, n_out=2000)
    )
    # Composed specs (the conv estimators: TensorFlow's convolution around the fused sampling) are
    # only as deterministic as TensorFlow's oneDNN convolution, which is not across thread counts.
    for spec in [s for s in SPECS if not s.composed] + [large_batch]:
        for value_seed in (0, 1):
            args = large_args(spec, value_seed)
            for mode in ("eager", "function"):
                values = run(mode, lambda: spec.outputs_and_grads(spec.fused, args))
                for i, v in enumerate(values):
                    results[f"{spec.name}/{value_seed}/{mode}/{i}"] = v
    results["threads"] = np.int64(tf.config.threading.get_intra_op_parallelism_threads())
    np.savez(path, **results)


@pytest.fixture(scope="module")
def results_per_thread_count(tmp_path_factory):
    folder = tmp_path_factory.mktemp("determinism")
    from conftest import subprocess_env

    env = subprocess_env()
    results = {}
    for threads in THREADS:
        path = folder / f"threads{threads}.npz"
        subprocess.run(
            [sys.executable, __file__, str(threads), str(path)], env=env, check=True, cwd=os.path.dirname(__file__)
        )
        results[threads] = dict(np.load(path))
    return results


def test_worker_ran_with_the_requested_threads(results_per_thread_count):
    for threads, results in results_per_thread_count.items():
        assert int(results["threads"]) == threads


@pytest.mark.parametrize("threads", THREADS[1:])
def test_bit_identical_whatever_the_thread_count(results_per_thread_count, threads):
    single = results_per_thread_count[1]
    other = results_per_thread_count[threads]
    keys = [k for k in single if k != "threads"]
    assert keys and set(keys) == set(other) - {"threads"}
    for key in keys:
        assert single[key].size > 0, key
        np.testing.assert_array_equal(other[key], single[key], err_msg=f"{key} with {threads} threads")


def test_eager_and_traced_calls_are_bit_identical(results_per_thread_count):
    for results in results_per_thread_count.values():
        for key in [k for k in results if "/eager/" in k]:
            np.testing.assert_array_equal(results[key.replace("/eager/", "/function/")], results[key], err_msg=key)


def test_different_value_seeds_differ(results_per_thread_count):
    """The comparison is not between constants: other arguments give other results."""
    results = results_per_thread_count[1]
    for key in [k for k in results if k.endswith("/eager/0") and "/0/" in k]:
        assert not np.array_equal(results[key], results[key.replace("/0/", "/1/", 1)]), key


if __name__ == "__main__":
    threads, out = int(sys.argv[1]), sys.argv[2]
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    compute_all(out)
