"""The ops under the reliability checks, as one table.

Each ``OpSpec`` says how to draw valid arguments of random sizes, which arguments are
differentiable, what the reference is, and which invalid arguments must be refused (and the name
the error must give). test_properties, test_determinism, test_numerics and test_concurrency all
iterate over ``SPECS``: adding an op to every check is one entry here.
"""

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
    medium: dict  # sizes for the NaN/Inf checks: several blocks and tiles, multiples of none
    differentiable: tuple  # argument names the gradients are taken for
    bad: tuple = ()  # Bad cases
    rtol: float = 2e-4
    atol: float = 2e-4  # scaled by max(1, max |reference|) of each output
    # Composed of TensorFlow ops in Python (the convolutions' flipout and local reparameterization):
    # ranks must be known when traced, and graph optimisation rounds them differently from eager mode.
    composed: bool = False

    def differentiable_in(self, args):
        """The differentiable arguments this call has (optional ones, like a bias, may be absent)."""
        return tuple(n for n in self.differentiable if args.get(n) is not None)

    def outputs_and_grads(self, fn, args):
        """[output, d/d(each differentiable argument)] of sum(output * fixed cotangent), dense."""
        values = grads(lambda: fn(**args), [args[n] for n in self.differentiable_in(args)])
        return [tf.convert_to_tensor(v) if isinstance(v, tf.IndexedSlices) else v for v in values]

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
        Bad(sd, lambda a: with_(a, **{sd: None})),
        Bad(mu, lambda a: with_(a, **{mu: tf.cast(a[mu], tf.int32)})),
        Bad(rho, lambda a: with_(a, **{rho: None})),
        Bad(rho, lambda a: with_(a, **{rho: tf.cast(a[rho], tf.float64)})),
        Bad(rho, lambda a: with_(a, **{rho: tf.zeros(a[rho].shape.as_list() + [2])})),
    )


# --- sample_gaussian, gaussian_kl -------------------------------------------------------------

SHAPE = st.lists(DIM, min_size=0, max_size=3)


def gaussian_sizes(extra=None):
    return st.fixed_dictionaries({"shape": SHAPE, "rho_center": RHO_CENTER, "seed_dtype": SEED_DTYPE, **(extra or {})})


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
    medium={"shape": [37, 29], "rho_center": -2.0, "seed_dtype": tf.int64},
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
    sizes=gaussian_sizes(
        {"rho_center": st.floats(-4.0, 1.0), "mu_prior": st.floats(-1.0, 1.0), "std_prior": st.floats(0.05, 2.0)}
    ),
    make=kl_args,
    large={"shape": [301, 331], "rho_center": -2.0, "seed_dtype": tf.int64, "mu_prior": 0.1, "std_prior": 0.5},
    medium={"shape": [37, 29], "rho_center": -2.0, "seed_dtype": tf.int64, "mu_prior": 0.1, "std_prior": 0.5},
    differentiable=("mu", "rho"),
    bad=bad_parameters()
    + (Bad("std_prior", lambda a: with_(a, std_prior=0.0)), Bad("std_prior", lambda a: with_(a, std_prior=-1.0))),
    rtol=1e-4,
    atol=1e-4,
)


def kl_analytic_args(sizes, rng):
    args = kl_args(sizes, rng)
    del args["seed"]
    return args


GAUSSIAN_KL_ANALYTIC = OpSpec(
    name="gaussian_kl_analytic",
    fused=ops.gaussian_kl_analytic,
    reference=reference.gaussian_kl_analytic,
    # No noise: rho spans tiny to large sigmas.
    sizes=gaussian_sizes(
        {"rho_center": st.floats(-12.0, 8.0), "mu_prior": st.floats(-1.0, 1.0), "std_prior": st.floats(0.05, 2.0)}
    ),
    make=kl_analytic_args,
    large={"shape": [301, 331], "rho_center": -2.0, "seed_dtype": tf.int64, "mu_prior": 0.1, "std_prior": 0.5},
    medium={"shape": [37, 29], "rho_center": -2.0, "seed_dtype": tf.int64, "mu_prior": 0.1, "std_prior": 0.5},
    differentiable=("mu", "rho"),
    bad=tuple(bad for bad in bad_parameters() if bad.name != "seed")
    + (
        Bad("std_prior", lambda a: with_(a, std_prior=0.0)),
        Bad("std_prior", lambda a: with_(a, std_prior=-1.0)),
        Bad("mu_prior", lambda a: with_(a, mu_prior=tf.zeros(a["mu"].shape.as_list() + [2]))),
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
        args.update(
            b_mu=floats(rng, [n_out], scale=0.5),
            b_rho=floats(rng, [n_out], center=sizes["rho_center"]),
            b_seed=seed(rng, sizes["seed_dtype"]),
        )
    return args


def _bad_x_in_features(a):
    return with_(a, x=tf.zeros(a["x"].shape.as_list()[:-1] + [a["x"].shape[-1] + 1]))


LINEAR = OpSpec(
    name="linear",
    fused=ops.linear,
    reference=reference.linear,
    sizes=st.fixed_dictionaries(
        {
            "batch": st.lists(DIM, min_size=0, max_size=2),
            "n_in": FEATURES,
            "n_out": FEATURES,
            "bias": st.booleans(),
            "rho_center": RHO_CENTER,
            "seed_dtype": SEED_DTYPE,
        }
    ),
    make=linear_args,
    large={"batch": [67, 3], "n_in": 300, "n_out": 257, "bias": True, "rho_center": -2.0, "seed_dtype": tf.int64},
    medium={"batch": [13], "n_in": 71, "n_out": 67, "bias": True, "rho_center": -2.0, "seed_dtype": tf.int64},
    differentiable=("x", "w_mu", "w_rho", "b_mu", "b_rho"),
    bad=bad_parameters("w_")
    + (
        Bad("x", _bad_x_in_features),
        Bad("x", lambda a: with_(a, x=tf.constant(1.0))),
        Bad("x", lambda a: with_(a, x=tf.cast(a["x"], tf.int32))),
        Bad("w_mu", lambda a: with_(a, w_mu=a["w_mu"][None], w_rho=a["w_rho"][None])),
        Bad(
            "b_mu",
            lambda a: with_(
                a, b_mu=tf.zeros([a["w_mu"].shape[0] + 1]), b_rho=tf.zeros([a["w_mu"].shape[0] + 1]), b_seed=a["w_seed"]
            ),
        ),
        Bad(
            "b_rho",
            lambda a: with_(
                a, b_mu=tf.zeros([a["w_mu"].shape[0]]), b_rho=tf.zeros([a["w_mu"].shape[0], 1]), b_seed=a["w_seed"]
            ),
        ),
        Bad("b_", lambda a: with_(a, b_mu=tf.zeros([a["w_mu"].shape[0]]), b_rho=None, b_seed=None)),
        Bad(
            "b_seed",
            lambda a: with_(
                a,
                b_mu=tf.zeros([a["w_mu"].shape[0]]),
                b_rho=tf.zeros([a["w_mu"].shape[0]]),
                b_seed=tf.constant([1, 2, 3], tf.int64),
            ),
        ),
    ),
)


def estimator_spec(base, estimator):
    """``base`` (linear, conv2d, conv1d) under a per-example estimator, with a random x_seed."""

    def make(sizes, rng):
        return {**base.make(sizes, rng), "estimator": estimator, "x_seed": seed(rng, sizes["seed_dtype"])}

    return OpSpec(
        name=f"{base.name}-{estimator}",
        fused=base.fused,
        reference=base.reference,
        sizes=base.sizes,
        make=make,
        large=base.large,
        medium=base.medium,
        differentiable=base.differentiable,
        bad=base.bad
        + (
            Bad("x_seed", lambda a: with_(a, x_seed=tf.constant([1, 2, 3], tf.int64))),
            Bad("x_seed", lambda a: with_(a, x_seed=None)),
            Bad("estimator", lambda a: with_(a, estimator="flip")),
        ),
        rtol=base.rtol,
        atol=base.atol,
        composed=base.name.startswith("conv"),
    )


LINEAR_FLIPOUT = estimator_spec(LINEAR, "flipout")
LINEAR_LOCAL_REPARAM = estimator_spec(LINEAR, "local_reparameterization")

# --- conv2d, conv1d ---------------------------------------------------------------------------


def conv_args(sizes, rng):
    rank, groups = sizes["rank"], sizes["groups"]
    spatial = sizes["spatial"][:rank]
    kernel = sizes["kernel"][:rank]
    if sizes["padding"] == "VALID":  # at least one output position
        spatial = [max(s, (k - 1) * sizes["dilation"] + 1) for s, k in zip(spatial, kernel)]
    c_in, c_out = sizes["in_per_group"] * groups, sizes["out_per_group"] * groups
    channels_last = sizes["channels_last"]
    x_shape = [sizes["batch"]] + (spatial + [c_in] if channels_last else [c_in] + spatial)
    w_shape = kernel + [sizes["in_per_group"], c_out]
    args = {
        "x": floats(rng, x_shape),
        "w_mu": floats(rng, w_shape, scale=0.5),
        "w_rho": floats(rng, w_shape, center=sizes["rho_center"]),
        "w_seed": seed(rng, sizes["seed_dtype"]),
        "stride": sizes["stride"],
        "padding": sizes["padding"],
        "dilation": sizes["dilation"],
        "groups": groups,
        "data_format": ("NHWC" if channels_last else "NCHW") if rank == 2 else ("NWC" if channels_last else "NCW"),
        "engine": sizes["engine"],
    }
    if sizes["bias"]:
        args.update(
            b_mu=floats(rng, [c_out], scale=0.5),
            b_rho=floats(rng, [c_out], center=sizes["rho_center"]),
            b_seed=seed(rng, sizes["seed_dtype"]),
        )
    return args


def conv_sizes(rank):
    return st.fixed_dictionaries(
        {
            "rank": st.just(rank),
            "batch": st.integers(1, 3),
            "spatial": st.lists(st.integers(1, 9), min_size=2, max_size=2),
            "kernel": st.lists(st.integers(1, 3), min_size=2, max_size=2),
            "in_per_group": st.integers(1, 5),
            "out_per_group": st.integers(1, 5),
            "groups": st.integers(1, 3),
            "stride": st.integers(1, 2),
            "dilation": st.integers(1, 2),
            "padding": st.sampled_from(["VALID", "SAME"]),
            "channels_last": st.booleans(),
            "bias": st.booleans(),
            "engine": st.sampled_from(["fused", "tensorflow"]),
            "rho_center": RHO_CENTER,
            "seed_dtype": SEED_DTYPE,
        }
    )


def conv_fixed(rank, batch, spatial, c, k):
    return {
        "rank": rank,
        "batch": batch,
        "spatial": spatial,
        "kernel": [k, k],
        "in_per_group": c,
        "out_per_group": c + 3,
        "groups": 1,
        "stride": 1,
        "dilation": 1,
        "padding": "SAME",
        "channels_last": True,
        "bias": True,
        "engine": "fused",
        "rho_center": -2.0,
        "seed_dtype": tf.int64,
    }


def _bad_channels(a):
    x = a["x"]
    axis = -1 if a["data_format"] in ("NHWC", "NWC") else 1
    shape = x.shape.as_list()
    shape[axis] += 1
    return with_(a, x=tf.zeros(shape))


def bad_conv():
    return bad_parameters("w_") + (
        Bad("x", _bad_channels),
        Bad("x", lambda a: with_(a, x=a["x"][0])),
        Bad("groups", lambda a: with_(a, groups=0)),
        Bad("stride", lambda a: with_(a, stride=0)),
        Bad("padding", lambda a: with_(a, padding="FULL")),
        Bad("data_format", lambda a: with_(a, data_format="CHWN")),
        Bad("engine", lambda a: with_(a, engine="gpu")),
        Bad(
            "b_mu",
            lambda a: with_(
                a,
                b_mu=tf.zeros([a["w_mu"].shape[-1] + 1]),
                b_rho=tf.zeros([a["w_mu"].shape[-1] + 1]),
                b_seed=a["w_seed"],
            ),
        ),
    )


def conv_spec(rank):
    fn = "conv2d" if rank == 2 else "conv1d"
    return OpSpec(
        name=fn,
        fused=getattr(ops, fn),
        sizes=conv_sizes(rank),
        make=conv_args,
        # `engine` picks how fusedbnn convolves; the reference has one way.
        reference=lambda engine, _reference=getattr(reference, fn), **args: _reference(**args),
        large=conv_fixed(rank, 4, [23, 19], 13, 3),
        # VALID: with SAME padding the fused engine (im2col + GEMM) multiplies the padding's zeros by
        # the weights, so a NaN/Inf weight reaches border outputs that TensorFlow's conv leaves
        # finite (0 * NaN = NaN): a known deviation, reported.
        medium={**conv_fixed(rank, 2, [9, 7], 5, 3), "padding": "VALID"},
        differentiable=("x", "w_mu", "w_rho", "b_mu", "b_rho"),
        bad=bad_conv(),
    )


CONV2D, CONV1D = conv_spec(2), conv_spec(1)
CONV2D_FLIPOUT = estimator_spec(CONV2D, "flipout")
CONV1D_LOCAL_REPARAM = estimator_spec(CONV1D, "local_reparameterization")

# --- embedding --------------------------------------------------------------------------------


def embedding_args(sizes, rng):
    rows, dim = sizes["rows"], sizes["dim"]
    args = {
        "ids": tf.constant(rng.integers(0, rows, sizes["ids_shape"]), sizes["ids_dtype"]),
        "w_mu": floats(rng, [rows, dim], scale=0.5),
        "w_rho": floats(rng, [rows, dim], center=sizes["rho_center"]),
        "w_seed": seed(rng, sizes["seed_dtype"]),
        "max_norm": sizes["max_norm"],
    }
    if sizes["padding_idx"] is not None:
        args["padding_idx"] = sizes["padding_idx"] % rows
    return args


def _bad_id(a):
    ids = a["ids"].numpy().reshape(-1).copy()
    if ids.size == 0:
        ids = np.zeros(1, ids.dtype)
    ids[-1] = a["w_mu"].shape[0]
    return with_(a, ids=tf.constant(ids, a["ids"].dtype))


EMBEDDING = OpSpec(
    name="embedding",
    fused=ops.embedding,
    reference=reference.embedding,
    sizes=st.fixed_dictionaries(
        {
            "rows": st.integers(1, 40),
            "dim": st.integers(0, 40),
            "ids_shape": st.lists(DIM, max_size=2),
            "ids_dtype": st.sampled_from([tf.int32, tf.int64]),
            "padding_idx": st.none() | st.integers(0, 100),
            "max_norm": st.none() | st.floats(0.1, 5.0),
            "rho_center": RHO_CENTER,
            "seed_dtype": SEED_DTYPE,
        }
    ),
    make=embedding_args,
    large={
        "rows": 3000,
        "dim": 67,
        "ids_shape": [64, 33],
        "ids_dtype": tf.int64,
        "padding_idx": None,
        "max_norm": None,
        "rho_center": -2.0,
        "seed_dtype": tf.int64,
    },
    medium={
        "rows": 50,
        "dim": 37,
        "ids_shape": [9, 7],
        "ids_dtype": tf.int64,
        "padding_idx": None,
        "max_norm": None,
        "rho_center": -2.0,
        "seed_dtype": tf.int64,
    },
    differentiable=("w_mu", "w_rho"),
    bad=bad_parameters("w_")
    + (
        Bad("ids", _bad_id),
        Bad("ids", lambda a: with_(a, ids=tf.cast(a["ids"], tf.float32))),
        Bad("padding_idx", lambda a: with_(a, padding_idx=a["w_mu"].shape[0])),
        Bad("padding_idx", lambda a: with_(a, padding_idx=-2)),
        Bad("max_norm", lambda a: with_(a, max_norm=-1.0)),
        Bad("norm_type", lambda a: with_(a, max_norm=1.0, norm_type=0.0)),
    ),
)

# --- lstm -------------------------------------------------------------------------------------


def _lstm_flat(module):
    """module.lstm with (h0, c0) as keyword arguments and h_seq, h_T, c_T in one vector."""

    def call(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0=None, c0=None):
        state = None if h0 is None else (h0, c0)
        h_seq, (h, c) = module.lstm(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, initial_state=state)
        return tf.concat([tf.reshape(h_seq, [-1]), tf.reshape(h, [-1]), tf.reshape(c, [-1])], 0)

    return call


def lstm_args(sizes, rng):
    batch, steps, n_in, hidden = sizes["batch"], sizes["steps"], sizes["n_in"], sizes["hidden"]
    args = {
        "x": floats(rng, [batch, steps, n_in]),
        "w_mu": floats(rng, [n_in + hidden, 4 * hidden], scale=0.5),
        "w_rho": floats(rng, [n_in + hidden, 4 * hidden], center=sizes["rho_center"]),
        "w_seed": seed(rng, sizes["seed_dtype"]),
        "b_mu": floats(rng, [4 * hidden], scale=0.5),
        "b_rho": floats(rng, [4 * hidden], center=sizes["rho_center"]),
        "b_seed": seed(rng, sizes["seed_dtype"]),
    }
    if sizes["state"]:
        args.update(h0=floats(rng, [batch, hidden], scale=0.5), c0=floats(rng, [batch, hidden], scale=0.5))
    return args


def lstm_fixed(batch, steps, n_in, hidden):
    return {
        "batch": batch,
        "steps": steps,
        "n_in": n_in,
        "hidden": hidden,
        "state": True,
        "rho_center": -2.0,
        "seed_dtype": tf.int64,
    }


LSTM = OpSpec(
    name="lstm",
    fused=_lstm_flat(ops),
    reference=_lstm_flat(reference),
    sizes=st.fixed_dictionaries(
        {
            "batch": st.integers(1, 4),
            "steps": st.integers(1, 5),
            "n_in": st.integers(1, 9),
            "hidden": st.integers(1, 9),
            "state": st.booleans(),
            "rho_center": RHO_CENTER,
            "seed_dtype": SEED_DTYPE,
        }
    ),
    make=lstm_args,
    large=lstm_fixed(9, 7, 37, 41),
    medium=lstm_fixed(3, 4, 7, 5),
    differentiable=("x", "w_mu", "w_rho", "b_mu", "b_rho", "h0", "c0"),
    bad=bad_parameters("w_")
    + bad_parameters("b_")
    + (
        Bad("x", lambda a: with_(a, x=a["x"][0])),
        Bad("w_mu", lambda a: with_(a, w_mu=a["w_mu"][1:], w_rho=a["w_rho"][1:])),
        Bad("b_mu", lambda a: with_(a, b_mu=a["b_mu"][1:], b_rho=a["b_rho"][1:])),
        Bad(
            "h0",
            lambda a: with_(
                a,
                h0=tf.zeros([a["x"].shape[0] + 1, a["b_mu"].shape[0] // 4]),
                c0=tf.zeros([a["x"].shape[0], a["b_mu"].shape[0] // 4]),
            ),
        ),
        Bad(
            "c0",
            lambda a: with_(
                a,
                h0=tf.zeros([a["x"].shape[0], a["b_mu"].shape[0] // 4]),
                c0=tf.zeros([a["x"].shape[0], a["b_mu"].shape[0] // 4 + 1]),
            ),
        ),
    ),
)

SPECS = [
    SAMPLE_GAUSSIAN,
    GAUSSIAN_KL,
    GAUSSIAN_KL_ANALYTIC,
    LINEAR,
    LINEAR_FLIPOUT,
    LINEAR_LOCAL_REPARAM,
    CONV2D,
    CONV2D_FLIPOUT,
    CONV1D,
    CONV1D_LOCAL_REPARAM,
    EMBEDDING,
    LSTM,
]
SPEC_IDS = [s.name for s in SPECS]


def large_args(spec, value_seed=0):
    """The spec's fixed large arguments, reproducible from value_seed."""
    return spec.make(spec.large, np.random.default_rng(value_seed))
