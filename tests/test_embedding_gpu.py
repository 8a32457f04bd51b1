"""ops.embedding on a TensorFlow GPU against the same op on the CPU: the GPU kernels' registration
(ids and seeds in host memory, staged copies, row-sparse gradients) end to end. Skips unless
TensorFlow sees a GPU and the op library was built with CUDA (-DFUSEDBNN_CUDA=ON)."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import kernels

from conftest import MODES, assert_allclose, gaussian_params, grads, run, seed_of
from fusedbnn import ops  # loads the op library


def gpu_kernels_available():
    if not tf.config.list_physical_devices("GPU"):
        return False
    registered = kernels.get_registered_kernels_for_op("FusedBnn>Embedding").kernel
    return any(k.device_type == "GPU" for k in registered)


pytestmark = pytest.mark.skipif(not gpu_kernels_available(), reason="no GPU, or an op library without CUDA")


def lookup_and_grads(device, mode, ids, w_mu, w_rho, w_seed, **options):
    def fn(ids, w_mu, w_rho, w_seed):
        with tf.device(device):
            y, dw_mu, dw_rho = grads(lambda: ops.embedding(ids, w_mu, w_rho, w_seed, **options), [w_mu, w_rho])
        return [y, (dw_mu.indices, dw_mu.values), (dw_rho.indices, dw_rho.values)]

    return run(mode, fn, ids, w_mu, w_rho, w_seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "ids_shape, rows, dim, options",
    [
        ([1], 1, 1, {}),
        ([4, 9], 30, 17, {"padding_idx": 3}),
        ([32, 64], 1000, 128, {}),
        ([0], 4, 5, {}),
        ([2, 50], 12, 33, {"max_norm": 1.0}),
        ([40], 7, 130, {"max_norm": 2.0, "norm_type": 1.0}),
        ([3, 5], 9, 8, {"max_norm": 0.5, "norm_type": 3.0, "padding_idx": 0}),
    ],
)
@pytest.mark.parametrize("id_dtype", [tf.int32, tf.int64])
def test_gpu_matches_cpu(mode, ids_shape, rows, dim, options, id_dtype, rng):
    w_mu, w_rho = gaussian_params(rng, [rows, dim])
    ids = tf.constant(rng.integers(0, rows, size=ids_shape), id_dtype)
    args = (ids, w_mu, w_rho, seed_of(rng))
    cpu = lookup_and_grads("/CPU:0", mode, *args, **options)
    gpu = lookup_and_grads("/GPU:0", mode, *args, **options)
    # The same noise bits on a vector CPU (noise.h's box_muller_poly), a few ulp from the scalar
    # CPU path's; the rest differs by rounding order.
    assert_allclose(gpu[0], cpu[0], rtol=1e-5, atol=1e-6, err_msg="y")
    for name, (gpu_indices, gpu_values), (cpu_indices, cpu_values) in zip(["w_mu", "w_rho"], gpu[1:], cpu[1:]):
        np.testing.assert_array_equal(gpu_indices, cpu_indices, err_msg=f"{name} indices")
        assert_allclose(gpu_values, cpu_values, rtol=1e-5, atol=1e-6, err_msg=f"d{name}")


@pytest.mark.parametrize("bad_id", [-1, 10])
def test_out_of_range_ids_raise_on_the_gpu(bad_id, rng):
    w_mu, w_rho = gaussian_params(rng, [10, 4])
    with tf.device("/GPU:0"), pytest.raises(tf.errors.InvalidArgumentError, match=f"got id {bad_id}"):
        ops.embedding(tf.constant([1, bad_id, 2]), w_mu, w_rho, seed_of(rng))
