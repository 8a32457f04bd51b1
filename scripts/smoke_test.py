"""Smoke test of an installed fusedbnn (scripts/check_wheel.sh runs it on the built wheel).

    python scripts/smoke_test.py        # from any directory but the source tree's python/

Checks that fusedbnn and its compiled libraries load from the installed package, that TensorFlow's
framework library is TensorFlow's own copy (not one shipped with fusedbnn), and runs every op once on
the CPU, forward and gradient, against ``fusedbnn.reference``. Exits non-zero on the first failure.
With ``FUSEDBNN_EXPECT_ISA`` set (``avx2``, ...), the CPU kernels must have chosen that instruction set.
"""

import os
import sysconfig
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedbnn  # noqa: E402
from fusedbnn import _core, ops, reference  # noqa: E402

RTOL = ATOL = 2e-4  # atol scaled by max(1, max |reference|), as the test suite's op checks


def mapped_libraries():
    """Paths of the shared objects this process has mapped."""
    with open("/proc/self/maps") as maps:
        fields = [line.split(maxsplit=5) for line in maps]
    return {f[5].strip() for f in fields if len(f) == 6 and f[5].startswith("/") and ".so" in f[5]}


def check_installation():
    package = Path(fusedbnn.__file__).resolve().parent
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if package.parent not in installed:
        raise AssertionError(
            f"fusedbnn was imported from {package}, not from the installed packages in {sorted(map(str, installed))}"
        )
    ops.sample_gaussian(tf.zeros([1]), tf.zeros([1]), [1, 2])  # loads the op library
    loaded = mapped_libraries()
    for name in ("_fusedbnn_ops.so", Path(_core.__file__).name):
        paths = {Path(p) for p in loaded if Path(p).name == name}
        if paths != {package / name}:
            raise AssertionError(f"{name} is mapped from {sorted(map(str, paths))}, expected {package / name}")
    framework = {Path(p) for p in loaded if Path(p).name.startswith("libtensorflow_framework")}
    tensorflow_lib = Path(tf.sysconfig.get_lib()).resolve()
    if not framework or any(p.resolve().parent != tensorflow_lib for p in framework):
        raise AssertionError(
            f"libtensorflow_framework is mapped from {sorted(map(str, framework))}, expected "
            f"only TensorFlow's copy in {tensorflow_lib}"
        )
    bundled = sorted(str(p) for p in package.parent.glob("fusedbnn*/**/libtensorflow*"))
    if bundled:
        raise AssertionError(f"the fusedbnn wheel ships TensorFlow libraries: {bundled}")
    print(
        f"fusedbnn {fusedbnn.__version__} from {package}, CPU kernels: {_core.isa()}, TensorFlow "
        f"{tf.__version__} from {tensorflow_lib}"
    )


def floats(rng, shape, center=0.0, scale=1.0):
    return tf.constant(rng.normal(center, scale, shape).astype(np.float32))


def params(rng, shape):
    return floats(rng, shape, scale=0.5), floats(rng, shape, center=-3.0), tf.constant(rng.integers(0, 2**31, [2]))


def engine(module, name):
    """conv2d/conv1d's engine argument, which only fusedbnn.ops has."""
    return {"engine": name} if module is ops else {}


def cases(rng):
    """(name, function of the module (ops or reference) and the arguments, the differentiable arguments)."""
    w, b = params(rng, [5, 7]), params(rng, [5])
    kernel2d, bias2d = params(rng, [3, 3, 4, 6]), params(rng, [6])
    kernel1d, bias1d = params(rng, [3, 4, 6]), params(rng, [6])
    table = params(rng, [20, 8])
    cell, cell_bias = params(rng, [6 + 5, 4 * 5]), params(rng, [4 * 5])
    ids = tf.constant(rng.integers(0, 20, [3, 4]))

    def linear_with_kl(m, x, w_mu, w_rho, b_mu, b_rho):
        """y and the one-sample KL of the call's sample: from the op itself (ops), drawn again (reference)."""
        if m is ops:
            y, kl = m.linear(x, w_mu, w_rho, w[2], b_mu, b_rho, b[2], kl_priors=((0.0, 0.1), (0.0, 0.1)))
        else:
            y = m.linear(x, w_mu, w_rho, w[2], b_mu, b_rho, b[2])
            kl = m.gaussian_kl(w_mu, w_rho, w[2]) + m.gaussian_kl(b_mu, b_rho, b[2])
        return tf.concat([tf.reshape(y, [-1]), [kl]], 0)

    def lstm(m, x, w_mu, w_rho, b_mu, b_rho):
        h_seq, (h, c) = m.lstm(x, w_mu, w_rho, cell[2], b_mu, b_rho, cell_bias[2])
        return tf.concat([tf.reshape(h_seq, [-1]), tf.reshape(h, [-1]), tf.reshape(c, [-1])], 0)

    return [
        ("sample_gaussian", lambda m, mu, rho: m.sample_gaussian(mu, rho, w[2]), {"mu": w[0], "rho": w[1]}),
        ("gaussian_kl", lambda m, mu, rho: m.gaussian_kl(mu, rho, w[2]), {"mu": w[0], "rho": w[1]}),
        ("gaussian_kl_analytic", lambda m, mu, rho: m.gaussian_kl_analytic(mu, rho), {"mu": w[0], "rho": w[1]}),
        (
            "linear",
            lambda m, x, w_mu, w_rho, b_mu, b_rho: m.linear(x, w_mu, w_rho, w[2], b_mu, b_rho, b[2]),
            {"x": floats(rng, [3, 7]), "w_mu": w[0], "w_rho": w[1], "b_mu": b[0], "b_rho": b[1]},
        ),
        (
            "linear with its KL",
            linear_with_kl,
            {"x": floats(rng, [3, 7]), "w_mu": w[0], "w_rho": w[1], "b_mu": b[0], "b_rho": b[1]},
        ),
        *[
            (
                f"linear ({estimator})",
                lambda m, x, w_mu, w_rho, b_mu, b_rho, estimator=estimator: m.linear(
                    x, w_mu, w_rho, w[2], b_mu, b_rho, b[2], estimator=estimator, x_seed=[3, 4]
                ),
                {"x": floats(rng, [3, 7]), "w_mu": w[0], "w_rho": w[1], "b_mu": b[0], "b_rho": b[1]},
            )
            for estimator in ("flipout", "local_reparameterization")
        ],
        (
            "conv2d",
            lambda m, x, w_mu, w_rho, b_mu, b_rho: m.conv2d(
                x, w_mu, w_rho, kernel2d[2], b_mu, b_rho, bias2d[2], padding="SAME", dilation=2, **engine(m, "fused")
            ),
            {
                "x": floats(rng, [2, 6, 5, 4]),
                "w_mu": kernel2d[0],
                "w_rho": kernel2d[1],
                "b_mu": bias2d[0],
                "b_rho": bias2d[1],
            },
        ),
        (
            "conv2d (TensorFlow engine)",
            lambda m, x, w_mu, w_rho: m.conv2d(x, w_mu, w_rho, kernel2d[2], **engine(m, "tensorflow")),
            {"x": floats(rng, [2, 6, 5, 4]), "w_mu": kernel2d[0], "w_rho": kernel2d[1]},
        ),
        (
            "conv1d",
            lambda m, x, w_mu, w_rho, b_mu, b_rho: m.conv1d(
                x, w_mu, w_rho, kernel1d[2], b_mu, b_rho, bias1d[2], stride=2, **engine(m, "fused")
            ),
            {
                "x": floats(rng, [2, 9, 4]),
                "w_mu": kernel1d[0],
                "w_rho": kernel1d[1],
                "b_mu": bias1d[0],
                "b_rho": bias1d[1],
            },
        ),
        (
            "embedding",
            lambda m, w_mu, w_rho: m.embedding(ids, w_mu, w_rho, table[2], padding_idx=0),
            {"w_mu": table[0], "w_rho": table[1]},
        ),
        (
            "lstm",
            lstm,
            {
                "x": floats(rng, [2, 3, 6]),
                "w_mu": cell[0],
                "w_rho": cell[1],
                "b_mu": cell_bias[0],
                "b_rho": cell_bias[1],
            },
        ),
    ]


def output_and_gradients(fn, module, args):
    """fn's output and the gradients of sum(output * fixed cotangent) for every argument, dense."""
    with tf.GradientTape() as tape:
        tape.watch(list(args.values()))
        out = fn(module, **args)
        cotangent = tf.cos(tf.reshape(tf.range(tf.size(out), dtype=tf.float32), tf.shape(out)))
        loss = tf.reduce_sum(out * cotangent)
    gradients = tape.gradient(loss, list(args.values()))
    return [out] + [tf.convert_to_tensor(g) for g in gradients]


def check_ops():
    for name, fn, args in cases(np.random.default_rng(0)):
        fused = output_and_gradients(fn, ops, args)
        expected = output_and_gradients(fn, reference, args)
        for what, f, r in zip(["output"] + [f"d{a}" for a in args], fused, expected):
            r = r.numpy()
            scale = max(1.0, float(np.abs(r).max(initial=0.0)))
            np.testing.assert_allclose(f.numpy(), r, rtol=RTOL, atol=ATOL * scale, err_msg=f"{name}: {what}")
        print(f"  {name}: output and {len(args)} gradients match the reference")


def check_isa():
    """The CPU kernels chose the instruction set that FUSEDBNN_EXPECT_ISA names, where it is set."""
    isa, expected = _core.isa(), os.environ.get("FUSEDBNN_EXPECT_ISA")
    if expected and isa != expected:
        raise AssertionError(f"the CPU kernels chose {isa!r}, FUSEDBNN_EXPECT_ISA is {expected!r}")


def main():
    check_installation()
    check_isa()
    check_ops()
    print("smoke test passed")


if __name__ == "__main__":
    main()  # an exception exits with status 1 and its traceback
