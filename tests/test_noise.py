"""The noise contract: Philox4x32-10 + Box-Muller equal to tf.random.stateless_normal."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import subprocess_env
from fusedbnn import _core, ops

SEEDS = [(0, 0), (1, 2), (-1, -1), (-5, 7), (2**31 - 1, -(2**31)), (123456789, 987654321)]
SIZES = [1, 3, 4, 5, 7, 63, 64, 65, 1000]


def tf_normal(shape, seed, dtype=tf.int64):
    return tf.random.stateless_normal(shape, seed=tf.constant(seed, dtype)).numpy()


def run_with_isa(isa_env, code, *args):
    """The words a child Python running `code` (with `args`) prints, its CPU kernels forced to
    `isa_env` through FUSEDBNN_ISA (a CPU without that instruction set runs the best it has)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=subprocess_env(FUSEDBNN_ISA=isa_env),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_key_counter_match_tensorflow(seed, dtype):
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=tf.constant(seed, dtype))
    ours_key, ours_counter = _core.stream_from_seed(seed)
    assert ours_key[0] | ours_key[1] << 32 == int(key.numpy()[0]) % 2**64
    c = [int(v) % 2**64 for v in counter.numpy()]
    assert ours_counter == (c[0] & 0xFFFFFFFF, c[0] >> 32, c[1] & 0xFFFFFFFF, c[1] >> 32)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_exact_noise_is_bit_identical(seed, n):
    np.testing.assert_array_equal(_core.normal(n, seed, exact=True), tf_normal([n], seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_noise_within_contract_bound(seed):
    n = 1000 * 1001
    expected = tf_normal([1000, 1001], seed).reshape(-1)
    fast = _core.normal(n, seed)
    assert np.abs(fast - expected).max() <= 2e-6
    # The bound is not met trivially: the values are the same normals, not merely close in law.
    assert np.corrcoef(fast, expected)[0, 1] > 0.999999


def test_large_index_random_access():
    seed = (42, -42)
    expected = tf_normal([4096], seed)
    for i in [0, 1, 2, 3, 4, 1023, 4095]:
        assert _core.eps_at(seed, i) == expected[i]


def draws_at_group(seed, group, n):
    """n normals of the seed's stream starting at Philox group `group`, from TensorFlow itself:
    StatelessRandomNormalV2 with the counter advanced by `group` (128-bit add)."""
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=tf.constant(seed, tf.int64))
    lo, hi = (int(v) % 2**64 for v in counter.numpy())
    value = (hi << 64 | lo) + group
    lo, hi = value % 2**64, (value >> 64) % 2**64
    shifted = tf.constant(np.array([lo, hi], dtype=np.uint64))
    return tf.raw_ops.StatelessRandomNormalV2(shape=[n], key=key, counter=shifted, alg=1).numpy()


@pytest.mark.parametrize("start", [2**31, 2**32 + 8, 2**40 + 4, 2**62])
@pytest.mark.parametrize("seed", [(7, 8), (-1, -1)])
def test_index_past_two_to_the_31(start, seed):
    """Elements past 2^31 (without allocating them): the exact and the vector kernels against TF."""
    expected = draws_at_group(seed, start // 4, 200)
    for j in [0, 1, 2, 3, 5, 199]:
        assert _core.eps_at(seed, start + j) == expected[j]
    np.testing.assert_array_equal(_core.normal(200, seed, exact=True, begin=start), expected)
    assert np.abs(_core.normal(200, seed, begin=start) - expected).max() <= 2e-6


@pytest.mark.parametrize("isa_env", ["scalar", "avx2", "avx512"])
def test_every_instruction_set_meets_the_bound(isa_env):
    """Each compiled instruction set (forced through FUSEDBNN_ISA) stays within 2e-6 of TensorFlow."""
    code = (
        "import numpy as np, tensorflow as tf; from fusedbnn import _core;"
        "n=200003; e=tf.random.stateless_normal([n], seed=tf.constant([9, 10], tf.int64)).numpy();"
        "print(_core.isa(), float(np.abs(_core.normal(n, (9, 10)) - e).max()))"
    )
    out = run_with_isa(isa_env, code)
    isa, err = out[-2], float(out[-1])
    assert isa in ("scalar", "avx2", "avx512")
    assert err <= 2e-6
    if isa == "scalar":
        assert err == 0.0


def test_vector_instruction_sets_draw_the_same_bits(tmp_path):
    """AVX2 and AVX-512 share noise.h's Box-Muller with the CUDA kernels, and so draw the same bits
    (tests/gpu checks the GPU's bit for bit against whichever of the two its machine's CPU runs).
    The second range crosses the carry of the counter's first word, where both take the exact path."""
    code = (
        "import sys, numpy as np; from fusedbnn import _core;"
        "np.save(sys.argv[1], np.concatenate([_core.normal(100003, (3, -4)),"
        " _core.normal(77, (3, -4), begin=4 * (2**32 - 6) + 1)])); print(_core.isa())"
    )
    draws = {}
    for isa_env in ("avx2", "avx512"):
        path = tmp_path / f"{isa_env}.npy"
        isa = run_with_isa(isa_env, code, str(path))[-1]
        draws[isa] = np.load(path)
    if set(draws) != {"avx2", "avx512"}:
        pytest.skip(f"this CPU runs {sorted(draws)} only")
    np.testing.assert_array_equal(draws["avx2"].view(np.uint32), draws["avx512"].view(np.uint32))


@pytest.mark.parametrize("shape", [[1], [3], [4], [5], [2, 3], [7, 11, 3], [1000, 1001]])
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_op_noise_matches_stateless_normal(shape, dtype):
    """sample_gaussian(0, rho, seed) with softplus(rho) == 1 returns eps itself."""
    rho = tf.fill(shape, np.float32(np.log(np.e - 1.0)))
    for seed in [(3, 4), (-9, 2**30)]:
        eps = ops.sample_gaussian(tf.zeros(shape), rho, tf.constant(seed, dtype)).numpy()
        np.testing.assert_allclose(eps, tf_normal(shape, seed, dtype), rtol=1e-6, atol=3e-6)


def test_isa_names_ignore_case_and_unknown_ones_are_reported():
    """FUSEDBNN_ISA="SCALAR " narrows like "scalar"; an unknown name is ignored with a line on stderr."""
    code = "from fusedbnn import _core; _core.normal(8, (1, 2)); print(_core.isa())"
    assert run_with_isa(" SCALAR ", code)[-1] == "scalar"
    best = run_with_isa("", code)[-1]
    unknown = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(FUSEDBNN_ISA="avx3"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert unknown.stdout.split()[-1] == best
    assert f'FUSEDBNN_ISA="avx3" is not one of scalar, avx2, avx512; ignored, using {best}' in unknown.stderr
