"""Concurrency: every op of op_specs.SPECS, called from several Python threads at once (eagerly and
through one shared tf.function) and inside a parallel tf.data map with prefetch, gives bit for bit
the results of serial calls."""

import threading

import numpy as np
import pytest
import tensorflow as tf

import fusedbnn
from fusedbnn import nn
from op_specs import SPEC_IDS, SPECS, large_args

THREADS = 6
CALLS_PER_THREAD = 3


def with_seeds(spec, args, k):
    """The arguments with every seed shifted by k: each thread samples its own noise."""
    return {n: v + k if isinstance(v, tf.Tensor) and n.endswith("seed") else v for n, v in args.items()}


def serial_results(spec, args, fn, count):
    return [[np.asarray(t) for t in fn(with_seeds(spec, args, k))] for k in range(count)]


def in_threads(count, work):
    """work(k) for k in range(count), from THREADS threads released together; results in order of k."""
    results, errors = [None] * count, []
    start = threading.Barrier(THREADS)

    def worker(t):
        start.wait()
        try:
            for k in range(t, count, THREADS):
                results[k] = [np.asarray(v) for v in work(k)]
        except Exception as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def assert_all_equal(actual, expected, what):
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        for i, (x, y) in enumerate(zip(a, e)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: call {k}, result {i}")


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_threads_match_serial_calls(spec):
    args = large_args(spec)
    count = THREADS * CALLS_PER_THREAD

    def eager(a):
        return spec.outputs_and_grads(spec.fused, a)

    expected = serial_results(spec, args, eager, count)
    assert_all_equal(in_threads(count, lambda k: eager(with_seeds(spec, args, k))), expected, f"{spec.name} eager")

    # One traced function shared by every thread; seeds (and only seeds) are its arguments.
    seed_names = [n for n in args if n.endswith("seed") and args[n] is not None]

    @tf.function(jit_compile=False)
    def traced(*seeds):
        return eager({**args, **dict(zip(seed_names, seeds))})

    def traced_call(k):
        shifted = with_seeds(spec, args, k)
        return traced(*[shifted[n] for n in seed_names])

    if spec.composed:  # graph optimisation rounds differently from eager mode: compare traced with traced
        expected = [[np.asarray(t) for t in traced_call(k)] for k in range(count)]
    assert_all_equal(in_threads(count, traced_call), expected, f"{spec.name} tf.function")


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_tf_data_parallel_map_with_prefetch_matches_serial_calls(spec):
    args = large_args(spec, value_seed=3)
    count = 12
    seed_names = [n for n in args if n.endswith("seed") and args[n] is not None]
    expected = serial_results(spec, args, lambda a: [spec.fused(**a)], count)

    def mapped(k):
        shifted = {n: args[n] + tf.cast(k, args[n].dtype) for n in seed_names}
        return spec.fused(**{**args, **shifted})

    if spec.composed:  # graph optimisation rounds differently from eager mode: compare traced with traced
        expected = [[np.asarray(tf.function(mapped)(tf.constant(k, tf.int64)))] for k in range(count)]

    dataset = tf.data.Dataset.range(count).map(mapped, num_parallel_calls=4, deterministic=True).prefetch(3)
    actual = [[np.asarray(y)] for y in dataset]
    if spec.composed:
        # A map function runs on tf.data's threads, and TensorFlow's own convolution inside (oneDNN's
        # sgemm at AVX2, as on an AVX2-only CPU) may sum in another order there: only our ops are
        # bit-exact.
        for k, (a, e) in enumerate(zip(actual, expected)):
            scale = max(1.0, float(np.max(np.abs(e[0]), initial=0.0)))
            np.testing.assert_allclose(
                a[0], e[0], rtol=1e-5, atol=1e-6 * scale, err_msg=f"{spec.name} tf.data: call {k}"
            )
    else:
        assert_all_equal(actual, expected, f"{spec.name} tf.data")


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: nn.Linear(16, 8, seed=1), tf.eye(16)),
        (lambda: nn.Embedding(16, 4, seed=1), tf.range(16)[None]),
        (lambda: fusedbnn.GaussianDistribution((16, 8), seed=1), None),
    ],
    ids=["linear", "embedding", "distribution_sample"],
)
def test_concurrent_calls_of_one_layer_draw_distinct_noise(make, x, mode):
    """The noise stream's step was a read then an assign (keras SeedGenerator.next()): calls running
    at once drew the same seed, i.e. the same weights (27 of 240 calls in the review). Every call now
    takes its own step: distinct samples, and the state advanced once per drawn seed."""
    layer = make()
    call = (lambda: layer.sample()) if x is None else (lambda: layer(x))
    if mode == "function":
        call = tf.function(call)
    call()
    start = layer._seed_generator.state.numpy()
    count = 8 * THREADS
    samples = in_threads(count, lambda k: [call()])
    assert len({s[0].tobytes() for s in samples}) == count
    seeds_per_call = 1 if x is None else len(layer._bayesian_parameters)
    np.testing.assert_array_equal(layer._seed_generator.state.numpy() - start, [0, count * seeds_per_call])
