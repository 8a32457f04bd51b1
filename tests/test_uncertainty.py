"""fusedbnn.uncertainty: Monte Carlo prediction and the entropy decomposition."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_allclose
from fusedbnn.nn import Linear
from fusedbnn.uncertainty import expected_entropy, mutual_information, predict_mc, predictive_entropy

# Two sampled models, three examples, over classes. Example 0: the samples are sure and disagree;
# example 1: both are unsure; example 2 (3 classes, zero-padded) is worked out below.
SAMPLES = np.array(
    [[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.7, 0.2, 0.1]], [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]]
)
LN2 = math.log(2.0)
# Example 2: mean (0.4, 0.2, 0.4); each sample is a permutation of (0.7, 0.2, 0.1).
H_MEAN_2 = -(0.4 * math.log(0.4) + 0.2 * math.log(0.2) + 0.4 * math.log(0.4))
H_SAMPLE_2 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))


def test_entropies_and_mutual_information_match_hand_computed_values():
    assert_allclose(predictive_entropy(SAMPLES), [LN2, LN2, H_MEAN_2], rtol=1e-12)
    assert_allclose(expected_entropy(SAMPLES), [0.0, LN2, H_SAMPLE_2], rtol=1e-12)
    assert_allclose(mutual_information(SAMPLES), [LN2, 0.0, H_MEAN_2 - H_SAMPLE_2], rtol=1e-12, atol=1e-15)
    assert abs(H_MEAN_2 - 1.05492) < 1e-5 and abs(H_SAMPLE_2 - 0.80182) < 1e-5  # by hand, 5 places


def test_logits_give_the_same_measures_as_their_softmax():
    logits = np.random.default_rng(0).normal(size=(5, 4, 3)) * 3
    probs = tf.nn.softmax(logits).numpy()
    for measure in (predictive_entropy, expected_entropy, mutual_information):
        assert_allclose(measure(logits, from_logits=True), measure(probs), rtol=1e-10)


def test_one_class_is_a_binary_classifiers_probability_or_logit():
    # Three samples of p(y = 1) for two examples: sure and disagreeing, then all unsure.
    p1 = np.array([[[0.1], [0.5]], [[0.9], [0.5]], [[0.5], [0.5]]])
    two_classes = np.concatenate([1.0 - p1, p1], axis=-1)
    logits = np.log(p1 / (1.0 - p1))
    for measure in (predictive_entropy, expected_entropy, mutual_information):
        expected = measure(two_classes)
        assert_allclose(measure(p1), expected, rtol=1e-12)
        assert_allclose(measure(logits, from_logits=True), expected, rtol=1e-12, atol=1e-15)
    assert mutual_information(p1)[0] > 0.1  # the disagreement shows (it read 0 as one softmax class)
    assert_allclose(predictive_entropy(np.array([[[800.0]], [[-800.0]]]), from_logits=True), [LN2], rtol=1e-12)
    with pytest.raises(ValueError, match=r"binary classifier's probabilities p\(y = 1\), in \[0, 1\]"):
        predictive_entropy(np.array([[[1.5]]]))


def test_measures_reject_what_is_not_a_stack_of_probabilities():
    with pytest.raises(ValueError, match="samples must have shape"):
        predictive_entropy(np.ones(3) / 3)
    with pytest.raises(ValueError, match="from_logits=True"):
        expected_entropy(np.ones((2, 1, 3)))
    with pytest.raises(ValueError, match="from_logits=True"):
        mutual_information(-np.eye(2)[None])


def noisy_model():
    inputs = keras.Input((4,))
    layer = Linear(4, 3, seed=2)
    layer.weights_distribution.rho.assign(tf.fill([3, 4], -1.0))
    return keras.Model(inputs, keras.layers.Softmax()(layer(inputs))), layer


def test_predict_mc_stacks_fresh_samples_and_summarises_them():
    model, _ = noisy_model()
    x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    stack = predict_mc(model, x, 6, batch_size=4, verbose=0)
    assert stack.shape == (6, 10, 3)
    assert_allclose(stack.sum(-1), np.ones((6, 10)), rtol=1e-5)
    assert len({stack[s].tobytes() for s in range(6)}) == 6, "every sample draws new weights"
    mean, std = predict_mc(model, x, 6, aggregate=True, verbose=0)
    assert mean.shape == std.shape == (10, 3) and (std > 0).all()
    entropy = predictive_entropy(stack)
    assert entropy.shape == (10,) and (mutual_information(stack) <= entropy + 1e-9).all()


def test_predict_mc_of_a_frozen_model_warns_and_repeats_the_fixed_prediction():
    model, layer = noisy_model()
    x = np.ones((3, 4), np.float32)
    model(x)
    layer.freeze()
    with pytest.warns(UserWarning, match="frozen"):
        stack = predict_mc(model, x, 3, verbose=0)
    for sample in stack:
        np.testing.assert_array_equal(sample, stack[0])
    assert_allclose(stack[0], model.predict(x, verbose=0), rtol=1e-6)


def test_predict_mc_takes_datasets_and_several_outputs():
    inputs = keras.Input((4,))
    first, second = Linear(4, 2, seed=1), Linear(4, 5, seed=2)
    model = keras.Model(inputs, {"a": first(inputs), "b": second(inputs)})
    x = np.ones((7, 4), np.float32)
    stacks = predict_mc(model, x, 3, verbose=0)
    assert stacks["a"].shape == (3, 7, 2) and stacks["b"].shape == (3, 7, 5)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(3)
    aggregated = predict_mc(model, dataset, 2, aggregate=True, verbose=0)
    assert aggregated["b"][0].shape == (7, 5)


def test_predict_mc_shows_progress_when_asked_and_checks_arguments(capsys):
    model, _ = noisy_model()
    x = np.ones((2, 4), np.float32)
    predict_mc(model, x, 3, verbose=1)
    assert "3/3" in capsys.readouterr().out
    predict_mc(model, x, 3)  # "auto": a short run stays silent
    assert capsys.readouterr().out == ""
    for bad in ({"num_samples": 0}, {"batch_size": -1}, {"verbose": 2}):
        args = {"num_samples": 2, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            predict_mc(model, x, **args)
    with pytest.raises(ValueError, match=r"x must be arrays or tensors with a batch axis.*np\.asarray"):
        predict_mc(model, x.tolist(), 2)


def test_predict_mc_of_no_examples_has_no_rows():
    model, _ = noisy_model()
    assert predict_mc(model, np.ones((0, 4), np.float32), 2, verbose=0).shape == (2, 0, 3)
