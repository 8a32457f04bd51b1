"""ops.lstm: the fused recurrence and its backpropagation through time against the pure-TF reference."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import MODES, assert_allclose, gaussian_params, grads, run, seed_of
from fusedbnn import _core, ops, reference


def lstm_inputs(rng, batch, steps, n_in, hidden, initial_state=True):
    x = tf.constant(rng.normal(size=[batch, steps, n_in]).astype(np.float32))
    w_mu, w_rho = gaussian_params(rng, [n_in + hidden, 4 * hidden])
    b_mu, b_rho = gaussian_params(rng, [4 * hidden])
    args = [x, w_mu, w_rho, seed_of(rng), b_mu, b_rho, seed_of(rng)]
    state = None
    if initial_state:
        state = tuple(tf.constant(rng.normal(0.0, 0.5, [batch, hidden]).astype(np.float32)) for _ in range(2))
    return args, state


def flat_outputs(lstm, args, state):
    """h_seq, h_T and c_T in one vector, so that every output gets its own cotangent."""
    h_seq, (h, c) = lstm(*args, initial_state=state)
    return tf.concat([tf.reshape(h_seq, [-1]), tf.reshape(h, [-1]), tf.reshape(c, [-1])], 0)


def compare(mode, args, state, rtol=5e-4, atol=5e-4):
    def both(args, state):
        sources = [a for a in args if a.dtype == tf.float32] + list(state or ())
        return (
            grads(lambda: flat_outputs(ops.lstm, args, state), sources),
            grads(lambda: flat_outputs(reference.lstm, args, state), sources),
        )

    fused, ref = run(mode, both, args, state)
    names = ["outputs", "dx", "dw_mu", "dw_rho", "db_mu", "db_rho", "dh0", "dc0"]
    for name, f, r in zip(names, fused, ref):
        scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
        assert f.shape == r.shape, name
        assert_allclose(f, r, rtol=rtol, atol=atol * scale, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "batch, steps, n_in, hidden",
    # The last: 4 hidden > 256, several column tiles of the weight gradients; 3 chunks of batch rows
    # in the recurrence, the last of 5 rows (a ragged tail of the AVX2 and AVX-512 cell kernels too).
    [(1, 1, 1, 1), (2, 1, 3, 5), (1, 9, 4, 7), (3, 6, 17, 13), (4, 40, 5, 6), (5, 3, 9, 33), (37, 3, 5, 70)],
)
@pytest.mark.parametrize("initial_state", [True, False])
def test_lstm_matches_reference(mode, batch, steps, n_in, hidden, initial_state, rng):
    compare(mode, *lstm_inputs(rng, batch, steps, n_in, hidden, initial_state))


def test_lstm_random_shapes(rng):
    for _ in range(4):
        batch, steps, n_in, hidden = (int(v) for v in rng.integers(1, [6, 25, 20, 40]))
        compare("function", *lstm_inputs(rng, batch, steps, n_in, hidden, bool(rng.integers(2))))


def test_long_sequence(rng):
    compare("function", *lstm_inputs(rng, 2, 300, 6, 10), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("mode", MODES)
def test_gate_order_and_sampling_against_numpy(mode, rng):
    """One step by hand: the gates are f, i, c, o along the last axis of W [E + H, 4H]."""
    args, (h0, c0) = lstm_inputs(rng, 3, 1, 4, 5)
    h_seq, (h, c) = run(mode, lambda: ops.lstm(*args, initial_state=(h0, c0)))
    w = ops.sample_gaussian(*args[1:4]).numpy()
    b = ops.sample_gaussian(*args[4:7]).numpy()
    z = np.concatenate([args[0].numpy()[:, 0], h0.numpy()], 1) @ w + b
    f, i, g, o = np.split(z, 4, axis=1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c_ref = sig(f) * c0.numpy() + sig(i) * np.tanh(g)
    assert_allclose(c, c_ref)
    assert_allclose(h, sig(o) * np.tanh(c_ref))
    assert_allclose(h_seq[:, 0], h, rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch, steps", [(0, 4), (3, 0)])
def test_empty_batch_or_sequence(mode, batch, steps, rng):
    args, state = lstm_inputs(rng, batch, steps, 3, 4)

    def fn():
        sources = [a for a in args if a.dtype == tf.float32] + list(state)
        return grads(lambda: flat_outputs(ops.lstm, args, state), sources)

    out, dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0 = run(mode, fn)
    assert dx.shape == (batch, steps, 3) and dh0.shape == (batch, 4)
    for g in (dw_mu, dw_rho, db_mu, db_rho):
        assert np.all(g == 0)
    if steps == 0:
        # No step: (h_T, c_T) = (h0, c0), and their cotangents pass straight through.
        assert_allclose(out, np.concatenate([state[0].numpy().ravel(), state[1].numpy().ravel()]))
        cot = np.cos(np.arange(out.size, dtype=np.float32))
        assert_allclose(dh0.ravel(), cot[: batch * 4])
        assert_allclose(dc0.ravel(), cot[batch * 4 :])


def test_numeric_gradient():
    rng = np.random.default_rng(7)
    args, state = lstm_inputs(rng, 2, 3, 2, 3)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = args

    def fn(x, w_mu, w_rho, b_mu, b_rho, h0, c0):
        return flat_outputs(ops.lstm, [x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed], (h0, c0))

    theoretical, numerical = tf.test.compute_gradient(fn, [x, w_mu, w_rho, b_mu, b_rho, *state], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        assert_allclose(t, n, rtol=2e-2, atol=2e-2)


def test_same_seed_is_bit_identical(rng):
    args, state = lstm_inputs(rng, 4, 10, 6, 9)
    first, second = (ops.lstm(*args, initial_state=state)[0].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("mode", MODES)
def test_bad_arguments_raise_naming_them(mode, rng):
    args, state = lstm_inputs(rng, 2, 3, 4, 5)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = args
    cases = [
        ([tf.zeros([2, 3])] + args[1:], state, "x"),
        ([tf.zeros([2, 3, 5])] + args[1:], state, "w_mu"),
        ([x, tf.zeros([9, 18]), tf.zeros([9, 18])] + args[3:], state, "w_mu"),
        ([x, w_mu, tf.zeros([9, 16])] + args[3:], state, "w_rho"),
        (args[:4] + [tf.zeros([16]), tf.zeros([16]), b_seed], state, "b_mu"),
        (args[:5] + [tf.zeros([19]), b_seed], state, "b_rho"),
        (args[:6] + [tf.constant([1], tf.int64)], state, "b_seed"),
        (args, (tf.zeros([2, 4]), state[1]), "h0"),
        (args, (state[0], tf.zeros([3, 5])), "c0"),
        (args, (state[0],), "initial_state"),
        ([tf.zeros([2, 3, 4], tf.float64)] + args[1:], state, "x"),
    ]
    for case_args, case_state, match in cases:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=match):
            run(mode, lambda: ops.lstm(*case_args, initial_state=case_state))


def numpy_lstm(x, w, b, h, c):
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    hidden = h.shape[1]
    h_seq = []
    for t in range(x.shape[1]):
        z = np.concatenate([x[:, t], h], 1) @ w + b
        f, i, g, o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        h_seq.append(h)
    return np.stack(h_seq, 1), h, c


def test_core_matches_numpy_and_the_op(rng):
    args, state = lstm_inputs(rng, 3, 7, 5, 6)
    x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed = (a.numpy() for a in args)
    h0, c0 = (s.numpy() for s in state)
    core_args = (x, w_mu, w_rho, tuple(w_seed), b_mu, b_rho, tuple(b_seed), h0, c0)
    w = ops.sample_gaussian(*args[1:4]).numpy().astype(np.float64)
    b = ops.sample_gaussian(*args[4:7]).numpy().astype(np.float64)
    for got, want in zip(_core.lstm(*core_args), numpy_lstm(x.astype(np.float64), w, b, h0, c0)):
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cotangents = [rng.normal(size=s).astype(np.float32) for s in ([3, 7, 6], [3, 6], [3, 6])]
    core_grads = _core.lstm_grad(*cotangents, *core_args)
    sources = [args[0], args[1], args[2], args[4], args[5], *state]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        h_seq, (h, c) = ops.lstm(*args, initial_state=state)
        loss = sum(tf.reduce_sum(out * cot) for out, cot in zip((h_seq, h, c), cotangents))
    for got, want in zip(core_grads, tape.gradient(loss, sources)):
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vectorised_activations():
    x = np.linspace(-100, 100, 20011).astype(np.float32)
    sig, tanh = _core.activations(x)
    assert_allclose(sig, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=0, atol=3e-7)
    assert_allclose(tanh, np.tanh(x.astype(np.float64)), rtol=0, atol=5e-7)
