"""fusedbnn.nn.Embedding and fusedbnn.nn.LSTM: illia's layer behaviour over the fused ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn import nn, ops, reference


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
    # The last call's output is a lookup in the sample that its seed draws.
    last_sample = dist.sample(layer._w.seed)
    assert_allclose(second, reference.embedding_lookup(last_sample, ids, **options))
    kl, num_params = layer.kl_cost()
    assert num_params == 20 * 7
    assert_allclose(kl, dist.log_prob(last_sample), rtol=1e-4, atol=1e-2)

    layer.freeze()
    assert layer.frozen
    assert_allclose(layer.w, last_sample, rtol=0, atol=0)
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
        ({"num_embeddings": 4, "embeddings_dim": 3,
          "weights_distribution": nn.Linear(4, 3).weights_distribution}, "weights_distribution"),
    ]:
        with pytest.raises(ValueError, match=name):
            nn.Embedding(**kwargs)


def test_embedding_config_round_trip():
    layer = nn.Embedding(12, 4, padding_idx=2, max_norm=1.5, norm_type=3.0, scale_grad_by_freq=True, sparse=True,
                         seed=5, name="emb")
    config = layer.get_config()
    clone = nn.Embedding.from_config(config)
    assert clone.get_config() == config
    for key in ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"):
        assert getattr(clone, key) == getattr(layer, key)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, nn.Embedding) and restored.get_config() == config
