"""The ops under the reliability checks, as one table.

Each ``OpSpec`` says how to draw valid arguments of random sizes, which arguments are
differentiable, what the reference is, and which invalid arguments must be refused (and the name
the error must give). test_properties, test_determinism, test_numerics and test_concurrency all
iterate over ``SPECS``: adding an op to every check is one entry here.
"""

import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf
from hypothesis import strategies as st

from conftest import assert_allclose, grads
from fusedbnn import ops, reference

# Sizes are small: hypothesis explores shapes, not throughput.
DIM = st.integers(0, 9)
FEATURES = st.integers(0, 70)


@dataclass(frozen=True)
class Bad:
    """An invalid call: ``mutate(args)`` returns the bad arguments; the error must name ``name``."""

    name: str
    mutate: Callable[[dict], dict]


@dataclass(frozen=True)
class OpSpec:
    name: str
    fused: Callable  # fusedbnn.ops function, called with keyword arguments
    reference: Callable  # the same signature in fusedbnn.reference
    sizes: st.SearchStrategy  # random sizes (a dict) for `make`
    make: Callable[[dict, np.random.Generator], dict]  # the keyword arguments for those sizes
    large: dict  # sizes big enough that the kernels split the work into many units
    differentiable: tuple  # argument names the gradients are taken for
    bad: tuple = ()  # Bad cases
    rtol: float = 2e-4
    atol: float = 2e-4  # scaled by max(1, max |reference|) of each output

    def differentiable_in(self, args):
        """The differentiable arguments this call has (optional ones, like a bias, may be absent)."""
        return tuple(n for n in self.differentiable if args.get(n) is not None)

    def outputs_and_grads(self, fn, args):
        """[output, d/d(each differentiable argument)] of sum(output * fixed cotangent)."""
        return grads(lambda: fn(**args), [args[n] for n in self.differentiable_in(args)])

    def assert_matches(self, fused, ref, args, what=""):
        """fused and ref (from outputs_and_grads) agree within the spec's tolerances."""
        names = ["output"] + ["d" + n for n in self.differentiable_in(args)]
        assert len(fused) == len(ref) == len(names)
        for name, f, r in zip(names, fused, ref):
            f, r = np.asarray(f), np.asarray(r)
            assert f.shape == r.shape, f"{what}{name}: shape {f.shape} != {r.shape}"
            scale = max(1.0, float(np.nanmax(np.abs(r), initial=0.0)))
            assert_allclose(f, r, rtol=self.rtol, atol=self.atol * scale, err_msg=f"{what}{name}")


def floats(rng, shape, center=0.0, scale=1.0):
    return tf.constant(rng.normal(center, scale, shape).astype(np.float32))


def seed(rng, dtype):
    return tf.constant(rng.integers(-(2**31), 2**31 - 1, [2]), dtype)


SEED_DTYPE = st.sampled_from([tf.int32, tf.int64])
RHO_CENTER = st.floats(-6.0, 1.0)


def with_(args, **changes):
    return {**args, **changes}


# Invalid seeds and parameter dtypes shared by every op: `prefix` is "" or "w_" / "b_".
def bad_parameters(prefix=""):
    mu, rho, sd = prefix + "mu", prefix + "rho", prefix + "seed"
    return (
        Bad(sd, lambda a: with_(a, **{sd: tf.constant([1, 2, 3], tf.int64)})),
        Bad(sd, lambda a: with_(a, **{sd: tf.constant([[1, 2]], tf.int64)})),
        Bad(sd, lambda a: with_(a, **{sd: tf.constant(7, tf.int64)})),
        Bad(sd, lambda a: with_(a, **{sd: tf.constant([1.0, 2.0])})),
        Bad(mu, lambda a: with_(a, **{mu: tf.cast(a[mu], tf.int32)})),
        Bad(rho, lambda a: with_(a, **{rho: tf.cast(a[rho], tf.float64)})),
        Bad(rho, lambda a: with_(a, **{rho: tf.zeros(a[rho].shape.as_list() + [2])})),
    )


# --- sample_gaussian, gaussian_kl -------------------------------------------------------------

SHAPE = st.lists(DIM, min_size=0, max_size=3)


def gaussian_sizes(extra=None):
    return st.fixed_dictionaries(
        {"shape": SHAPE, "rho_center": RHO_CENTER, "seed_dtype": SEED_DTYPE, **(extra or {})}
    )


def gaussian_args(sizes, rng):
    return {
        "mu": floats(rng, sizes["shape"], scale=0.5),
        "rho": floats(rng, sizes["shape"], center=sizes["rho_center"]),
        "seed": seed(rng, sizes["seed_dtype"]),
    }


def kl_args(sizes, rng):
    return {**gaussian_args(sizes, rng), "mu_prior": sizes["mu_prior"], "std_prior": sizes["std_prior"]}


SAMPLE_GAUSSIAN = OpSpec(
    name="sample_gaussian",
    fused=ops.sample_gaussian,
    reference=reference.sample_gaussian,
    sizes=gaussian_sizes(),
    make=gaussian_args,
    large={"shape": [301, 331], "rho_center": -2.0, "seed_dtype": tf.int64},
    differentiable=("mu", "rho"),
    bad=bad_parameters(),
    rtol=1e-5,
    atol=1e-5,
)

GAUSSIAN_KL = OpSpec(
    name="gaussian_kl",
    fused=ops.gaussian_kl,
    reference=reference.gaussian_kl,
    # rho >= -4: the KL's 1/sigma^2 terms make float32 sums of tiny sigmas differ in the last bits.
    sizes=gaussian_sizes({"rho_center": st.floats(-4.0, 1.0), "mu_prior": st.floats(-1.0, 1.0),
                          "std_prior": st.floats(0.05, 2.0)}),
    make=kl_args,
    large={"shape": [301, 331], "rho_center": -2.0, "seed_dtype": tf.int64, "mu_prior": 0.1, "std_prior": 0.5},
    differentiable=("mu", "rho"),
    bad=bad_parameters() + (
        Bad("std_prior", lambda a: with_(a, std_prior=0.0)),
        Bad("std_prior", lambda a: with_(a, std_prior=-1.0)),
    ),
    rtol=1e-4,
    atol=1e-4,
)

# --- linear -----------------------------------------------------------------------------------


def linear_args(sizes, rng):
    n_in, n_out = sizes["n_in"], sizes["n_out"]
    args = {
        "x": floats(rng, sizes["batch"] + [n_in]),
        "w_mu": floats(rng, [n_out, n_in], scale=0.5),
        "w_rho": floats(rng, [n_out, n_in], center=sizes["rho_center"]),
        "w_seed": seed(rng, sizes["seed_dtype"]),
    }
    if sizes["bias"]:
        args.update(b_mu=floats(rng, [n_out], scale=0.5), b_rho=floats(rng, [n_out], center=sizes["rho_center"]),
                    b_seed=seed(rng, sizes["seed_dtype"]))
    return args


def _bad_x_in_features(a):
    return with_(a, x=tf.zeros(a["x"].shape.as_list()[:-1] + [a["x"].shape[-1] + 1]))


LINEAR = OpSpec(
    name="linear",
    fused=ops.linear,
    reference=reference.linear,
    sizes=st.fixed_dictionaries({
        "batch": st.lists(DIM, min_size=0, max_size=2), "n_in": FEATURES, "n_out": FEATURES,
        "bias": st.booleans(), "rho_center": RHO_CENTER, "seed_dtype": SEED_DTYPE,
    }),
    make=linear_args,
    large={"batch": [67, 3], "n_in": 300, "n_out": 257, "bias": True, "rho_center": -2.0, "seed_dtype": tf.int64},
    differentiable=("x", "w_mu", "w_rho", "b_mu", "b_rho"),
    bad=bad_parameters("w_") + (
        Bad("x", _bad_x_in_features),
        Bad("x", lambda a: with_(a, x=tf.constant(1.0))),
        Bad("x", lambda a: with_(a, x=tf.cast(a["x"], tf.int32))),
        Bad("w_mu", lambda a: with_(a, w_mu=a["w_mu"][None], w_rho=a["w_rho"][None])),
        Bad("b_mu", lambda a: with_(a, b_mu=tf.zeros([a["w_mu"].shape[0] + 1]),
                                    b_rho=tf.zeros([a["w_mu"].shape[0] + 1]), b_seed=a["w_seed"])),
        Bad("b_rho", lambda a: with_(a, b_mu=tf.zeros([a["w_mu"].shape[0]]), b_rho=tf.zeros([a["w_mu"].shape[0], 1]),
                                     b_seed=a["w_seed"])),
        Bad("b_", lambda a: with_(a, b_mu=tf.zeros([a["w_mu"].shape[0]]), b_rho=None, b_seed=None)),
        Bad("b_seed", lambda a: with_(a, b_mu=tf.zeros([a["w_mu"].shape[0]]), b_rho=tf.zeros([a["w_mu"].shape[0]]),
                                      b_seed=tf.constant([1, 2, 3], tf.int64))),
    ),
)

SPECS = [SAMPLE_GAUSSIAN, GAUSSIAN_KL, LINEAR]
SPEC_IDS = [s.name for s in SPECS]


def subprocess_env(**extra):
    """The environment for a child Python that imports what this one does (fusedbnn included)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TF_CPP_MIN_LOG_LEVEL": "2",
            **extra}


def large_args(spec, value_seed=0):
    """The spec's fixed large arguments, reproducible from value_seed."""
    return spec.make(spec.large, np.random.default_rng(value_seed))
