"""fusedbnn.nn.Embedding and fusedbnn.nn.LSTM: illia's layer behaviour over the fused ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import nn


def embedding_lookup(table, ids, padding_idx=None, max_norm=None, norm_type=2.0):
    """illia's Embedding.call in NumPy on a fixed table."""
    rows = np.asarray(table, np.float64)[np.asarray(ids)]
    if max_norm is not None:
        norms = np.sum(np.abs(rows) ** norm_type, axis=-1, keepdims=True) ** (1 / norm_type)
        rows = rows * np.clip(norms, 0, max_norm) / np.maximum(norms, 1e-7)
    if padding_idx is not None:
        rows[np.asarray(ids) == padding_idx] = 0
    return rows


def embedding_ids(rng, shape, rows):
    return tf.constant(rng.integers(0, rows, size=shape), tf.int64)


@pytest.mark.parametrize("options", [{}, {"padding_idx": 3, "max_norm": 0.05, "norm_type": 1.0}])
def test_embedding_samples_each_call_and_freezes(options, rng):
    layer = nn.Embedding(20, 7, seed=1, **options)
    ids = embedding_ids(rng, [4, 5], 20)
    first, second = layer(ids).numpy(), layer(ids).numpy()
    assert first.shape == (4, 5, 7)
    assert not np.allclose(first, second)
    dist = layer.weights_distribution
    kl, num_params = layer.kl_cost()
    assert num_params == 20 * 7

    layer.freeze()  # fixes the last call's sample
    assert layer.frozen
    last_sample = layer.w.numpy()
    assert_allclose(second, embedding_lookup(last_sample, ids, **options), rtol=1e-5, atol=1e-6)
    assert_allclose(kl, dist.log_prob(last_sample), rtol=1e-4, atol=1e-2)
    frozen = layer(ids).numpy()
    assert_allclose(frozen, second, rtol=1e-6, atol=1e-6)
    assert_allclose(layer(ids), frozen, rtol=0, atol=0)
    assert_allclose(layer.kl_cost()[0], dist.log_prob(layer.w), rtol=1e-5, atol=1e-3)
    layer.unfreeze()
    assert not np.allclose(layer(ids).numpy(), frozen)


def test_embedding_trains_in_a_traced_step_with_sparse_gradients(rng):
    layer = nn.Embedding(50, 6, padding_idx=0, seed=2)
    ids = embedding_ids(rng, [8, 3], 50)
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function(jit_compile=False)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(ids))) + layer.kl_cost()[0] * 1e-3
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
        return grads

    mu_before = layer.weights_distribution.mu.numpy()
    grads = step()
    assert all(g is not None for g in grads)
    changed = np.any(layer.weights_distribution.mu.numpy() != mu_before, axis=1)
    # The KL term touches every row; the lookup adds to the looked-up ones.
    assert changed.all()
    layer.freeze()
    frozen = step()  # already traced: the frozen flag is a variable
    assert_allclose(layer(ids), layer(ids), rtol=0, atol=0)
    assert all(g is not None for g in frozen)


def test_embedding_accepts_float_ids_and_rejects_bad_arguments():
    layer = nn.Embedding(10, 3, seed=0)
    assert layer(tf.constant([[1.0], [9.0]])).shape == (2, 1, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="got id 10"):
        layer(tf.constant([10]))
    for kwargs, name in [
        ({"num_embeddings": 0, "embeddings_dim": 3}, "num_embeddings"),
        ({"num_embeddings": 4, "embeddings_dim": 2.5}, "embeddings_dim"),
        ({"num_embeddings": 4, "embeddings_dim": 3, "padding_idx": 4}, "padding_idx"),
        ({"num_embeddings": 4, "embeddings_dim": 3, "max_norm": -1.0}, "max_norm"),
        ({"num_embeddings": 4, "embeddings_dim": 3, "norm_type": 0}, "norm_type"),
        ({"num_embeddings": 4, "embeddings_dim": 3, "max_norm": True}, "max_norm"),  # was a max_norm of 1
        ({"num_embeddings": 4, "embeddings_dim": 3, "norm_type": True}, "norm_type"),
        (
            {"num_embeddings": 4, "embeddings_dim": 3, "weights_distribution": nn.Linear(4, 3).weights_distribution},
            "weights_distribution",
        ),
    ]:
        with pytest.raises(ValueError, match=name):
            nn.Embedding(**kwargs)


@pytest.mark.parametrize("frozen", [False, True])
def test_ids_are_never_wrapped_into_the_table_and_sparse_ids_are_refused(frozen):
    layer = nn.Embedding(11, 3, seed=0)
    if frozen:
        layer.freeze()
    # Cast to int32, 2^32 + 2 looked up row 2 and 1e10 reported "got id -2147483648".
    for ids in (tf.constant([2**32 + 2], tf.uint64), tf.constant([1e10])):
        with pytest.raises(tf.errors.InvalidArgumentError, match="(got id|indices.*=) ?" + str(int(ids[0].numpy()))):
            layer(ids)
    assert layer(tf.constant([[3]], tf.uint8)).shape == (1, 1, 3)
    for ids in (tf.ragged.constant([[1, 2], [3]]), tf.sparse.from_dense(tf.constant([[1, 0], [3, 0]]))):
        with pytest.raises(ValueError, match=f"embedding.* takes dense inputs, got a {type(ids).__name__}"):
            layer(ids)


def test_sequence_lstm_refuses_integer_features_naming_the_layer():
    layer = nn.SequenceLSTM(3, seed=1)
    for call in (layer, tf.function(layer)):
        with pytest.raises(ValueError, match="sequence_lstm.*must be floating point, got dtype int32"):
            call(tf.ones([2, 4, 2], tf.int32))


def test_embedding_config_round_trip():
    layer = nn.Embedding(
        12, 4, padding_idx=2, max_norm=1.5, norm_type=3.0, scale_grad_by_freq=True, sparse=True, seed=5, name="emb"
    )
    config = layer.get_config()
    clone = nn.Embedding.from_config(config)
    assert clone.get_config() == config
    for key in ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"):
        assert getattr(clone, key) == getattr(layer, key)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, nn.Embedding) and restored.get_config() == config


def illia_lstm(layer, ids, init_states=None):
    """illia's LSTM.call in NumPy from the frozen variables under illia's names."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    x = embedding_lookup(layer.embedding.w, ids[..., 0], layer.padding_idx, layer.max_norm, layer.norm_type)
    w = {
        name: getattr(layer, name).numpy().astype(np.float64)
        for name in ("wf", "bf", "wi", "bi", "wc", "bc", "wo", "bo", "wv", "bv")
    }
    if init_states is None:
        h = c = np.zeros([x.shape[0], layer.hidden_size])
    else:
        h, c = (np.asarray(s, np.float64) for s in init_states)
    for t in range(x.shape[1]):
        z = np.concatenate([x[:, t], h], 1)
        c = c * sig(z @ w["wf"] + w["bf"]) + np.tanh(z @ w["wc"] + w["bc"]) * sig(z @ w["wi"] + w["bi"])
        h = sig(z @ w["wo"] + w["bo"]) * np.tanh(c)
    return h @ w["wv"] + w["bv"], (h, c)


def lstm_ids(rng, batch, steps, rows):
    return tf.constant(rng.integers(0, rows, size=[batch, steps, 1]), tf.int64)


@pytest.mark.parametrize("options", [{}, {"padding_idx": 0, "max_norm": 0.1}])
@pytest.mark.parametrize("with_states", [False, True])
def test_lstm_frozen_weights_under_illia_names_reproduce_the_output(options, with_states, rng):
    layer = nn.LSTM(15, 4, 6, 3, seed=3, **options)
    ids = lstm_ids(rng, 5, 7, 15)
    states = None
    if with_states:
        states = tuple(tf.constant(rng.normal(0, 0.5, [5, 6]).astype(np.float32)) for _ in range(2))
    y, (h, c) = layer(ids, init_states=states)
    assert y.shape == (5, 3) and h.shape == (5, 6) and c.shape == (5, 6)
    assert not np.allclose(layer(ids, init_states=states)[0], y)
    last = layer(ids, init_states=states)
    layer.freeze()
    for name, shape in [
        ("wf", (10, 6)),
        ("wi", (10, 6)),
        ("wc", (10, 6)),
        ("wo", (10, 6)),
        ("bf", (6,)),
        ("bi", (6,)),
        ("bc", (6,)),
        ("bo", (6,)),
        ("wv", (6, 3)),
        ("bv", (3,)),
    ]:
        assert tuple(getattr(layer, name).shape) == shape, name
    frozen = layer(ids, init_states=states)
    # freeze() keeps the last call's sample, so the frozen layer repeats that call ...
    for got, want in zip(tf.nest.flatten(frozen), tf.nest.flatten(last)):
        assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # ... and illia's computation from the named variables gives the same.
    for got, want in zip(tf.nest.flatten(frozen), tf.nest.flatten(illia_lstm(layer, ids.numpy(), states))):
        assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    layer.unfreeze()
    assert not layer.frozen and not layer.embedding.frozen
    assert not np.allclose(layer(ids, init_states=states)[0], frozen[0])


def test_lstm_kl_cost_includes_every_parameter(rng):
    layer = nn.LSTM(11, 3, 5, 2, seed=4)
    layer(lstm_ids(rng, 2, 4, 11))
    kl, num_params = layer.kl_cost()
    assert num_params == 11 * 3 + 4 * (8 * 5 + 5) + 5 * 2 + 2
    layer.freeze()
    frozen_parts = [layer.embedding.weights_distribution.log_prob(layer.embedding.w)] + [
        dist.log_prob(value)
        for dist, value in [
            (layer.gate_weights_distribution, tf.concat([layer.wf, layer.wi, layer.wc, layer.wo], 1)),
            (layer.gate_bias_distribution, tf.concat([layer.bf, layer.bi, layer.bc, layer.bo], 0)),
            (layer.output_weights_distribution, layer.wv),
            (layer.output_bias_distribution, layer.bv),
        ]
    ]
    assert_allclose(layer.kl_cost()[0], tf.add_n(frozen_parts), rtol=1e-6, atol=1e-3)
    # The frozen sample is the last call's sample: the same KL.
    assert_allclose(layer.kl_cost()[0], kl, rtol=1e-4, atol=1e-2)


def test_lstm_trains_in_a_traced_step(rng):
    layer = nn.LSTM(20, 4, 5, 2, padding_idx=1, seed=6)
    ids = lstm_ids(rng, 3, 6, 20)
    states = [tf.Variable(rng.normal(size=[3, 5]).astype(np.float32)) for _ in range(2)]
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function(jit_compile=False)
    def step():
        with tf.GradientTape() as tape:
            y, (h, c) = layer(ids, init_states=states)
            loss = tf.reduce_sum(tf.square(y)) + tf.reduce_sum(h) + layer.kl_cost()[0] * 1e-4
        variables = layer.trainable_variables + states
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss, grads

    losses = [float(step()[0]) for _ in range(3)]
    _, grads = step()
    assert len(layer.trainable_variables) == 10 and all(g is not None for g in grads)
    assert np.all(np.isfinite(losses))
    layer.freeze()
    frozen_loss, frozen_grads = step()  # the same trace, now on the frozen branch
    assert np.isfinite(float(frozen_loss))
    assert all(g is not None for g in frozen_grads[-2:])  # the states still get gradients


def test_lstm_config_round_trip_and_bad_arguments():
    layer = nn.LSTM(9, 4, 3, 2, padding_idx=0, max_norm=2.0, norm_type=1.0, sparse=True, seed=8, name="rnn")
    config = layer.get_config()
    clone = nn.LSTM.from_config(config)
    assert clone.get_config() == config
    assert clone.embedding.padding_idx == 0 and clone.embedding.max_norm == 2.0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, nn.LSTM) and restored.get_config() == config
    for kwargs, name in [
        ((0, 4, 3, 2), "num_embeddings"),
        ((9, 4, 0, 2), "hidden_size"),
        ((9, 4, 3, -1), "output_size"),
        ((9, 4.0, 3, 2), "embeddings_dim"),
    ]:
        with pytest.raises(ValueError, match=name):
            nn.LSTM(*kwargs)
    with pytest.raises(ValueError, match="batch, steps, 1"):
        layer(tf.zeros([2, 3, 2], tf.int64))
    with pytest.raises(ValueError, match=r"init_states must be \(h0, c0\), got 1 tensors"):
        layer(tf.zeros([2, 3], tf.int64), (tf.zeros([2, 3]),))


def test_sequence_lstm_refuses_other_features_than_it_was_built_with():
    layer = nn.SequenceLSTM(4, seed=1)
    layer(tf.zeros([2, 3, 5]))
    with pytest.raises(ValueError, match=r"sequence_lstm.*axis -1 of input shape to have value 5.*\(2, 3, 7\)"):
        layer(tf.zeros([2, 3, 7]))


def test_sequence_lstm_kl_cost_before_build_says_to_build_it():
    # Its parameters are declared in build(): the KL of an unbuilt layer was (0.0, 0), so the KL of
    # an unbuilt subclassed model left it out silently.
    layer = nn.SequenceLSTM(4, seed=1)
    with pytest.raises(ValueError, match=r"sequence_lstm.* not built.*features"):
        layer.kl_cost()
    layer.build((2, 3, 5))
    kl, num_params = layer.kl_cost()
    assert num_params == (5 + 4) * 16 + 16 and np.isfinite(kl.numpy())


def test_sequence_lstm_keeps_the_steps_in_a_functional_model():
    # The frozen branch's TensorArray dropped the count of steps, so Flatten then Dense could not build.
    inputs = keras.Input((5, 3))
    hidden = nn.SequenceLSTM(4, return_sequences=True, seed=1)(inputs)
    assert tuple(hidden.shape) == (None, 5, 4)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    assert model.predict(np.zeros((2, 5, 3), np.float32), verbose=0).shape == (2, 2)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_sequence_lstm_output_shape_is_what_it_returns(return_sequences, return_state):
    layer = nn.SequenceLSTM(4, return_sequences=return_sequences, return_state=return_state, seed=1)
    outputs = layer(tf.zeros([2, 5, 3]))
    expected = tf.nest.map_structure(lambda t: tuple(t.shape), outputs)
    assert tf.nest.flatten(layer.compute_output_shape((2, 5, 3))) == tf.nest.flatten(expected)


def test_sequence_lstm_in_bidirectional_says_it_runs_forward_only():
    with pytest.raises((TypeError, ValueError), match="SequenceLSTM runs forward only"):
        keras.layers.Bidirectional(nn.SequenceLSTM(4, seed=1))


def test_lstm_embedding_takes_the_lstms_dtype_policy():
    # Under a mixed_float16 global policy an LSTM given dtype="float32" computes in float32 throughout:
    # its embedding once took the global policy and rounded the looked-up rows to float16.
    ids = tf.constant([[1, 2, 3]])
    expected, _ = nn.LSTM(7, 4, 5, 3, seed=2)(ids)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = nn.LSTM(7, 4, 5, 3, seed=2, dtype="float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.embedding.dtype_policy.name == "float32"
    np.testing.assert_array_equal(layer(ids)[0], expected)


def test_saving_keeps_the_frozen_weights(tmp_path, rng):
    ids = rng.integers(0, 13, size=[2, 5, 1])
    inputs = keras.Input(shape=(5, 1), dtype="int64")
    recurrent = nn.LSTM(13, 3, 4, 2, padding_idx=0, seed=9)
    table = nn.Embedding(13, 6, max_norm=1.0, seed=10)
    y, (h, c) = recurrent(inputs)
    model = keras.Model(inputs, {"y": y, "h": h, "embedded": table(inputs)})
    model(ids)
    recurrent.freeze()
    table.freeze()
    expected = model(ids)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = loaded(ids)
    for key in expected:
        assert_allclose(got[key], expected[key], rtol=0, atol=0, err_msg=key)
    restored = next(layer for layer in loaded.layers if isinstance(layer, nn.LSTM))
    assert restored.frozen and restored.embedding.frozen
    assert_allclose(restored.wf, recurrent.wf, rtol=0, atol=0)
