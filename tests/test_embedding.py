"""ops.embedding: fused lookup and its row-sparse gradients against the pure-TF reference."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, peak_bytes, run, seed_of, subprocess_env
from fusedbnn import _core, ops, reference


def table(rng, rows, dim, rho_center=-3.0):
    w_mu, w_rho = gaussian_params(rng, [rows, dim], rho_center)
    return w_mu, w_rho, seed_of(rng)


def random_ids(rng, shape, rows, dtype=tf.int64):
    return tf.constant(rng.integers(0, rows, size=shape), dtype)


def dense_grads(fn, sources):
    """Output and dense gradients of sum(fn() * cot) (embedding gradients are IndexedSlices)."""
    return [tf.convert_to_tensor(g) for g in grads(fn, sources)]


def compare(mode, ids, w_mu, w_rho, w_seed, rtol=2e-4, atol=2e-4, **options):
    def both(ids, w_mu, w_rho, w_seed):
        return (
            dense_grads(lambda: ops.embedding(ids, w_mu, w_rho, w_seed, **options), [w_mu, w_rho]),
            dense_grads(lambda: reference.embedding(ids, w_mu, w_rho, w_seed, **options), [w_mu, w_rho]),
        )

    fused, ref = run(mode, both, ids, w_mu, w_rho, w_seed)
    for name, f, r in zip(["y", "dw_mu", "dw_rho"], fused, ref):
        assert f.shape == r.shape, name
        assert np.all(np.isfinite(f)), name
        assert_allclose(f, r, rtol=rtol, atol=atol, err_msg=name)
    return fused


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "ids_shape, rows, dim",
    [
        ([1], 1, 1),
        ([7], 5, 3),
        ([4, 9], 30, 17),
        ([2, 3, 5], 11, 64),
        ([32, 5], 1000, 129),
        ([0], 4, 5),
        ([3, 0], 4, 5),
        ([2, 3], 4, 0),
        ([0], 3, 0),
    ],
)
@pytest.mark.parametrize("id_dtype", [tf.int32, tf.int64])
def test_embedding_matches_reference(mode, ids_shape, rows, dim, id_dtype, rng):
    compare(mode, random_ids(rng, ids_shape, rows, id_dtype), *table(rng, rows, dim))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0])
def test_max_norm_active_and_inactive(mode, norm_type, rng):
    w_mu, w_rho, w_seed = table(rng, 20, 13)
    ids = random_ids(rng, [6, 8], 20)
    norms = np.linalg.norm(ops.embedding(ids, w_mu, w_rho, w_seed).numpy(), ord=norm_type, axis=-1)
    # A bound between the middle norms clips about half the rows (none sits at the kink of the
    # rescale, where the two sides may pick different subgradients); one above them all clips none.
    distinct = np.unique(norms)
    middle = len(distinct) // 2
    for max_norm in (float(distinct[middle - 1] + distinct[middle]) / 2, float(norms.max()) * 2):
        y = compare(mode, ids, w_mu, w_rho, w_seed, max_norm=max_norm, norm_type=norm_type)[0]
        clipped = norms > max_norm
        assert_allclose(np.linalg.norm(y, ord=norm_type, axis=-1)[clipped], max_norm, rtol=1e-5)
        assert_allclose(y[~clipped], ops.embedding(ids, w_mu, w_rho, w_seed).numpy()[~clipped], rtol=0, atol=0)
        assert clipped.any() == (max_norm < norms.max())


@pytest.mark.parametrize("mode", MODES)
def test_padding_and_repeated_ids(mode, rng):
    w_mu, w_rho, w_seed = table(rng, 9, 6)
    ids = tf.constant([[2, 2, 0, 5], [2, 0, 8, 5]], tf.int32)
    for options in ({"padding_idx": 0}, {"padding_idx": 2, "max_norm": 0.5}):
        y, dw_mu, dw_rho = compare(mode, ids, w_mu, w_rho, w_seed, **options)
        padded = ids.numpy() == options["padding_idx"]
        assert np.all(y[padded] == 0.0)
        assert np.all(dw_mu[options["padding_idx"]] == 0.0) and np.all(dw_rho[options["padding_idx"]] == 0.0)


def test_gradients_are_row_slices_per_position_as_gather_gives_them(rng):
    """Without max_norm: one slice per position (repeated ids repeat, padding slices are zero), with
    drho = dy * eps * sigmoid(rho) of each position's row, as tf.gather's gradient of the sample."""
    w_mu, w_rho, w_seed = table(rng, 50, 4)
    ids = tf.constant([[7, 3, 7], [49, 3, 0]], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch([w_mu, w_rho])
        loss = tf.reduce_sum(ops.embedding(ids, w_mu, w_rho, w_seed, padding_idx=0))
    dw_mu, dw_rho = tape.gradient(loss, [w_mu, w_rho])
    for g in (dw_mu, dw_rho):
        assert isinstance(g, tf.IndexedSlices)
        assert g.indices.numpy().tolist() == [7, 3, 7, 49, 3, 0]
        assert tuple(g.dense_shape.numpy()) == (50, 4)
    assert_allclose(dw_mu.values, [[1.0] * 4] * 5 + [[0.0] * 4])
    assert np.all(dw_rho.values.numpy()[5] == 0.0)
    eps = tf.random.stateless_normal([50, 4], w_seed).numpy()
    expected = eps * tf.sigmoid(w_rho).numpy()
    assert_allclose(dw_rho.values.numpy()[:5], expected[[7, 3, 7, 49, 3]], rtol=1e-5, atol=1e-6)


def test_gradients_with_max_norm_are_row_slices_of_the_distinct_ids(rng):
    w_mu, w_rho, w_seed = table(rng, 50, 4)
    ids = tf.constant([7, 3, 7, 49, 3, 0], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch([w_mu, w_rho])
        loss = tf.reduce_sum(ops.embedding(ids, w_mu, w_rho, w_seed, padding_idx=0, max_norm=1e6))
    dw_mu, dw_rho = tape.gradient(loss, [w_mu, w_rho])
    for g in (dw_mu, dw_rho):
        assert isinstance(g, tf.IndexedSlices)
        assert g.indices.numpy().tolist() == [3, 7, 49]
        assert tuple(g.dense_shape.numpy()) == (50, 4)
    assert_allclose(dw_mu.values, [[2.0] * 4, [2.0] * 4, [1.0] * 4])


def test_rows_do_not_depend_on_the_other_ids(rng):
    w_mu, w_rho, w_seed = table(rng, 300, 37)
    together = ops.embedding(tf.constant([5, 299, 5, 128]), w_mu, w_rho, w_seed).numpy()
    for position, row in enumerate([5, 299, 5, 128]):
        np.testing.assert_array_equal(
            ops.embedding(tf.constant([row]), w_mu, w_rho, w_seed).numpy()[0], together[position]
        )


def test_numeric_gradient():
    rng = np.random.default_rng(4)
    w_mu, w_rho, w_seed = table(rng, 6, 5, rho_center=-1.0)
    ids = tf.constant([[1, 4, 1], [0, 5, 3]])
    for options in ({}, {"max_norm": 0.8, "padding_idx": 3}, {"max_norm": 0.8, "norm_type": 1.5}):
        fn = lambda m, r: ops.embedding(ids, m, r, w_seed, **options)  # noqa: E731
        theoretical, numerical = tf.test.compute_gradient(fn, [w_mu, w_rho], delta=1e-3)
        for t, n in zip(theoretical, numerical):
            assert_allclose(t, n, rtol=2e-2, atol=2e-2)


def test_core_matches_full_table_sample(rng):
    w_mu, w_rho = (t.numpy() for t in gaussian_params(rng, [40, 21]))
    ids = rng.integers(0, 40, size=30)
    full = _core.sample_gaussian(w_mu, w_rho, (3, 4))
    y, dw_drho = _core.embedding(ids, w_mu, w_rho, (3, 4))
    assert_allclose(y, full[ids], rtol=0, atol=0)
    dy = rng.normal(size=(30, 21)).astype(np.float32)
    rows, dw_mu, dw_rho = _core.embedding_grad(dy, dw_drho, ids, w_mu, w_rho, (3, 4))
    dense = np.zeros_like(w_mu)
    np.add.at(dense, ids, dy)
    assert rows.tolist() == sorted(set(ids.tolist()))
    assert_allclose(dw_mu, dense[rows])
    assert_allclose(dw_rho, _core.sample_gaussian_grad(dense, w_mu, w_rho, (3, 4))[0][rows])


@pytest.mark.parametrize("rows", [1, 255, 256, 70000])
def test_gradient_rows_are_sorted_and_summed_in_position_order(rows, rng):
    """The backward's radix sort over one to three bytes of the ids: distinct ids ascending, each
    row the float32 sum of its dy rows in position order (bit for bit), drho = dmu * dw_drho."""
    w_mu, w_rho = (t.numpy() for t in gaussian_params(rng, [rows, 3]))
    ids = np.concatenate([rng.integers(0, rows, 50), rng.integers(max(0, rows - 3), rows, 30), [0, rows - 1]])
    rng.shuffle(ids)
    dy = rng.normal(size=(len(ids), 3)).astype(np.float32)
    _, dw_drho = _core.embedding(ids, w_mu, w_rho, (5, 6))
    indices, dw_mu, dw_rho = _core.embedding_grad(dy, dw_drho, ids, w_mu, w_rho, (5, 6))
    assert indices.tolist() == sorted(set(ids.tolist()))
    for row, dmu, drho in zip(indices, dw_mu, dw_rho):
        positions = np.flatnonzero(ids == row)
        total = dy[positions[0]].copy()
        for n in positions[1:]:
            total += dy[n]
        np.testing.assert_array_equal(dmu, total)
        np.testing.assert_array_equal(drho, total * dw_drho[positions[0]])


@pytest.mark.parametrize("mode", MODES)
def test_bad_arguments_raise_naming_them(mode, rng):
    w_mu, w_rho, w_seed = table(rng, 10, 3)
    ids = tf.constant([1, 2])
    op_cases = [
        ((tf.constant([1, 10]), w_mu, w_rho, w_seed), {}, "got id 10"),
        ((tf.constant([[3, -1]], tf.int64), w_mu, w_rho, w_seed), {}, "got id -1"),
        ((ids, w_mu, tf.zeros([10, 4]), w_seed), {}, "w_rho"),
        ((ids, tf.zeros([10]), tf.zeros([10]), w_seed), {}, "w_mu"),
        ((ids, w_mu, w_rho, tf.constant([1, 2, 3], tf.int64)), {}, "w_seed"),
        ((tf.constant([1.0, 2.0]), w_mu, w_rho, w_seed), {}, "ids"),
        ((ids, w_mu, w_rho, w_seed), {"padding_idx": 10}, "padding_idx"),
        ((ids, w_mu, w_rho, w_seed), {"padding_idx": -2}, "padding_idx"),
        ((ids, w_mu, w_rho, w_seed), {"max_norm": 0.0}, "max_norm"),
        ((ids, w_mu, w_rho, w_seed), {"max_norm": 1.0, "norm_type": 0.0}, "norm_type"),
    ]
    for args, options, match in op_cases:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=match):
            run(mode, lambda: ops.embedding(*args, **options))


@pytest.mark.parametrize("mode", MODES)
def test_variables_give_what_their_values_give(mode, rng):
    """Variables (tf.Variable and keras.Variable) go to the *FromVariables ops, which read them in
    place: same outputs, same gradients, found by the tape without watch()."""
    w_mu, w_rho, w_seed = table(rng, 12, 7)
    ids = tf.constant([[3, 3, 0, 11], [5, 0, 3, 2]], tf.int32)
    for make in (tf.Variable, keras.Variable):
        v_mu, v_rho = make(w_mu), make(w_rho)
        for options in ({}, {"padding_idx": 0, "max_norm": 0.6}):

            def both():
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch([w_mu, w_rho])
                    from_variables = ops.embedding(ids, v_mu, v_rho, w_seed, **options)
                    from_values = ops.embedding(ids, w_mu, w_rho, w_seed, **options)
                    losses = [tf.reduce_sum(y**3) for y in (from_variables, from_values)]
                grads = [tape.gradient(losses[0], [v_mu, v_rho]), tape.gradient(losses[1], [w_mu, w_rho])]
                return [from_variables, from_values], [[tf.convert_to_tensor(g) for g in gs] for gs in grads]

            (y_var, y_val), (g_var, g_val) = run(mode, both)
            np.testing.assert_array_equal(y_var, y_val)
            for a, b in zip(g_var, g_val):
                np.testing.assert_array_equal(a, b)


def test_sparse_updates_do_not_make_lookups_copy_the_table(rng):
    """An optimizer's scatter of the IndexedSlices gradient switches TensorFlow variables to
    copy-on-read, after which every ReadVariableOp copies the whole table. Lookups from variables
    must not: their allocations stay at the size of the output, far below one table."""
    rows, dim = 4096, 64  # 1 MiB per table
    w_mu, w_rho = (keras.Variable(t) for t in gaussian_params(rng, [rows, dim], -3.0))
    ids, w_seed = random_ids(rng, [8], rows), seed_of(rng)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ops.embedding(ids, w_mu, w_rho, w_seed))
    keras.optimizers.SGD(0.1).apply_gradients(zip(tape.gradient(loss, [w_mu, w_rho]), [w_mu, w_rho]))

    table_bytes = rows * dim * 4
    lookup = tf.function(lambda: ops.embedding(ids, w_mu, w_rho, w_seed))
    lookup()
    assert peak_bytes(lookup) < table_bytes // 8
    # What the check guards against: an ordinary read copies the table now.
    assert peak_bytes(lambda: tf.identity(w_mu.value)) >= table_bytes


# Run in a fresh process: the allocator's counts there hold no chunks freed or left over by other tests.
HELD_BYTES_CHECK = """
import conftest
import numpy as np
import tensorflow as tf
from fusedbnn import ops, reference

rng = np.random.default_rng(0)
rows, dim = 8192, 128
ids = tf.constant(rng.integers(0, rows, [32, 32]), tf.int64)
w_mu, w_rho = (tf.Variable(t) for t in conftest.gaussian_params(rng, [rows, dim]))
w_seed = tf.constant([3, 4], tf.int64)


def held_bytes(lookup):
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    with tf.GradientTape() as tape:
        y = lookup(ids, w_mu, w_rho, w_seed)
        held = tf.config.experimental.get_memory_info("CPU:0")["current"] - before
    tape.gradient(tf.reduce_sum(y), [w_mu, w_rho])
    return held


output_bytes = 32 * 32 * dim * 4
fused, unfused = held_bytes(ops.embedding), held_bytes(reference.embedding)
assert output_bytes <= fused <= 2 * output_bytes, (fused, output_bytes)
assert unfused >= rows * dim * 4, (unfused, rows * dim * 4)
"""


@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn", "no-onednn"])
def test_a_taped_lookup_keeps_at_most_one_output_sized_tensor_for_its_gradient(onednn):
    """docs/design.md, "What a backward op may keep": noise-derived values no larger than the op's
    output. Between the forward pass and the gradient a taped lookup holds its output and dw/drho of
    the looked-up elements, nothing table-sized (eps, sigma or a sampled table: the reference holds
    several). Tensors of at least 256 KiB: oneDNN's allocator counts only those."""
    result = subprocess.run(
        [sys.executable, "-c", HELD_BYTES_CHECK],
        env=subprocess_env(TF_ENABLE_ONEDNN_OPTS=onednn),
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
