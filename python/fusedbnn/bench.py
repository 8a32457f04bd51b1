"""Microbenchmarks: each fused op against the pure-TensorFlow reference and the deterministic layer.

    python -m fusedbnn.bench [--cases linear-s,linear-b] [--pairs 30] [--json out.json] [--plot out.png]
                             [--estimator flipout|local_reparameterization] [--gradient-variance]

Besides forward and forward+backward, each case times the fused side's ELBO step (forward, the KL
of every sampled parameter, backward), one-sample and closed-form, against its forward+backward
step; the case ``kl-analytic`` times ``gaussian_kl_analytic`` forward+backward over a 4096 x 4096
weight against one ``sample_gaussian`` of it.

Method (docs/design.md, "Benchmarks"): every side is a ``tf.function(jit_compile=False)`` over variables (a constant
seed would let Grappler fold the reference's noise into a constant). The three sides are timed in one
process, interleaved, for many rounds; the reported figures are medians of per-round ratios, which
stay stable on a shared, noisy machine where absolute times do not. Peak memory is TensorFlow's CPU
allocator peak during one training step above what was allocated before it.
"""

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from fusedbnn import ops, reference


def enable_allocator_stats():
    """Make TensorFlow's CPU allocator keep the statistics that peak memory is read from.

    Only BFC allocators keep them. With oneDNN TensorFlow uses its own, which does; without oneDNN
    (TF_ENABLE_ONEDNN_OPTS=0, or CPUs where TensorFlow leaves it off) TF_CPU_ALLOCATOR_USE_BFC=true
    turns on the plain one. TensorFlow reads the variable when it makes its CPU device, at its first
    op: this works after `import tensorflow`, but not once an op has run.
    """
    if not ops._ONEDNN:
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


# `python -m fusedbnn.bench` imports TensorFlow through the package before this module, but runs no op.
enable_allocator_stats()

NO_ALLOCATOR_STATS = (
    "fusedbnn bench: peak memory not measured: TensorFlow's CPU allocator keeps no statistics in this "
    "process. They need its BFC allocator, which oneDNN turns on and TF_CPU_ALLOCATOR_USE_BFC=true turns "
    "on elsewhere, as TensorFlow reads it at its first op (here one ran before fusedbnn.bench set it, or it "
    "is set to false). Run `python -m fusedbnn.bench` in a fresh process, or set "
    "TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow starts."
)

SIDES = ("fused", "reference", "deterministic")

# The layers' default prior N(0, 0.1^2) for the weight and the bias, as ops.linear's kl_priors.
DEFAULT_PRIORS = ((0.0, 0.1), (0.0, 0.1))


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """What the numbers were measured on: the CPU, its cores, the instruction set our kernels run,
    whether TensorFlow uses oneDNN, and the instruction set oneDNN may use (the settings that decide
    the machine class of a result).

    TensorFlow's MatMul calls oneDNN's sgemm even with ``TF_ENABLE_ONEDNN_OPTS=0``, at the widest
    instruction set of the CPU: on an AVX-512 CPU only ``ONEDNN_MAX_CPU_ISA=AVX2`` as well makes the
    baselines those of an AVX2-only CPU."""
    from fusedbnn import _core

    isa = _core.isa()
    onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or None
    machine_class = f"{isa} + oneDNN" if ops._ONEDNN else f"{isa}, no oneDNN"
    if onednn_isa:
        machine_class += f", oneDNN's sgemm at most {onednn_isa}"
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "isa": isa,
        "onednn": ops._ONEDNN,
        "onednn_max_cpu_isa": onednn_isa,
        "machine_class": machine_class,
        "tensorflow": tf.__version__,
    }


@dataclasses.dataclass
class Side:
    """One implementation of a case: a forward function and a training step (forward + all gradients).

    The fused side also has ELBO steps: the training step with the KL of its sampled parameters
    added, the one-sample estimate (``elbo``: from the layer op's KL output where it has one, as a
    layer's kl_cost() in a traced step) or the closed form (``elbo_analytic``)."""

    forward: object
    train_step: object
    elbo: object = None
    elbo_analytic: object = None


def _function(fn):
    return tf.function(fn, jit_compile=False)


def _step(forward, trainables, kl=None):
    """The gradient of sum(forward()^2) (plus 1e-3 kl() if given) for every trainable, as a tf.function."""

    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(forward()))
            if kl is not None:
                loss += 1e-3 * kl()
        return tape.gradient(loss, trainables)

    return _function(train_step)


def _fused_kl_step(forward_with_kl, trainables):
    """The ELBO step of a forward that returns ``(y, kl)``, the KL from its fused op (as a layer's
    kl_cost() after a call in the same function)."""

    def train_step():
        with tf.GradientTape() as tape:
            y, kl = forward_with_kl()
            loss = tf.reduce_sum(tf.square(y)) + 1e-3 * kl
        return tape.gradient(loss, trainables)

    return _function(train_step)


def _side(forward, trainables, sampled=None, forward_with_kl=None):
    """A Side training every trainable; ``sampled``: the ``(mu, rho, seed)`` of each parameter the
    forward samples, whose KL the ELBO steps add; ``forward_with_kl``: the forward returning
    ``(y, kl)`` with the KL computed by the fused op, which the ``elbo`` step then uses."""
    if sampled is None:
        return Side(_function(forward), _step(forward, trainables))

    def one_sample_kl():
        return tf.add_n([ops.gaussian_kl(mu, rho, seed) for mu, rho, seed in sampled])

    def analytic_kl():
        return tf.add_n([ops.gaussian_kl_analytic(mu, rho) for mu, rho, _ in sampled])

    return Side(
        _function(forward),
        _step(forward, trainables),
        _step(forward, trainables, one_sample_kl)
        if forward_with_kl is None
        else _fused_kl_step(forward_with_kl, trainables),
        _step(forward, trainables, analytic_kl),
    )


def _params(shape, rng, rho=-5.0):
    mu = tf.Variable(rng.normal(0.0, 0.1, shape).astype(np.float32))
    return mu, tf.Variable(np.full(shape, rho, np.float32)), tf.Variable(rng.integers(0, 2**31, [2]), dtype=tf.int64)


def _estimator_args(estimator, rng):
    """The ``estimator`` and ``x_seed`` keyword arguments of the fused and reference sides."""
    if estimator == "reparameterization":
        return {}
    return {"estimator": estimator, "x_seed": tf.Variable(rng.integers(0, 2**31, [2]), dtype=tf.int64)}


def linear_case(batch, n_in, n_out):
    """A Bayesian dense layer ``n_in -> n_out`` at batch ``batch``, with bias."""

    def build(rng, estimator="reparameterization"):
        x = tf.Variable(rng.normal(size=[batch, n_in]).astype(np.float32))
        w_mu, w_rho, w_seed = _params([n_out, n_in], rng)
        b_mu, b_rho, b_seed = _params([n_out], rng)
        trainables = [x, w_mu, w_rho, b_mu, b_rho]
        dense = keras.layers.Dense(n_out)
        dense.build((batch, n_in))
        e = _estimator_args(estimator, rng)
        return {
            "fused": _side(
                lambda: ops.linear(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, **e),
                trainables,
                [(w_mu, w_rho, w_seed), (b_mu, b_rho, b_seed)],
                (lambda: ops.linear(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, kl_priors=DEFAULT_PRIORS))
                if not e
                else None,
            ),
            "reference": _side(lambda: reference.linear(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, **e), trainables),
            "deterministic": _side(lambda: dense(x), [x] + dense.trainable_variables),
        }

    return build


def conv_case(batch, spatial, n_in, n_out, kernel, padding, engine="auto"):
    """A Bayesian convolution (1-D or 2-D by the length of ``spatial`` and ``kernel``), channels last,
    with bias, against ``keras.layers.Conv1D`` / ``Conv2D``."""
    rank = len(spatial)
    fused_fn, reference_fn = (ops.conv1d, reference.conv1d) if rank == 1 else (ops.conv2d, reference.conv2d)
    keras_layer = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D

    def build(rng, estimator="reparameterization"):
        x = tf.Variable(rng.normal(size=[batch, *spatial, n_in]).astype(np.float32))
        w_mu, w_rho, w_seed = _params([*kernel, n_in, n_out], rng)
        b_mu, b_rho, b_seed = _params([n_out], rng)
        trainables = [x, w_mu, w_rho, b_mu, b_rho]
        deterministic = keras_layer(n_out, kernel, padding=padding.lower())
        deterministic.build((batch, *spatial, n_in))
        args = dict(padding=padding, **_estimator_args(estimator, rng))
        return {
            "fused": _side(
                lambda: fused_fn(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, engine=engine, **args),
                trainables,
                [(w_mu, w_rho, w_seed), (b_mu, b_rho, b_seed)],
                (
                    lambda: fused_fn(
                        x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, engine=engine, kl_priors=DEFAULT_PRIORS, **args
                    )
                )
                if estimator == "reparameterization"
                else None,
            ),
            "reference": _side(lambda: reference_fn(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, **args), trainables),
            "deterministic": _side(lambda: deterministic(x), [x] + deterministic.trainable_variables),
        }

    return build


def embedding_case(rows, dim, ids_shape):
    """A Bayesian embedding table ``[rows, dim]`` looked up at random ids of shape ``ids_shape``."""

    def build(rng):
        ids = tf.Variable(rng.integers(0, rows, ids_shape), dtype=tf.int64)
        w_mu, w_rho, w_seed = _params([rows, dim], rng)
        table = keras.layers.Embedding(rows, dim)
        table.build(ids_shape)
        return {
            "fused": _side(lambda: ops.embedding(ids, w_mu, w_rho, w_seed), [w_mu, w_rho], [(w_mu, w_rho, w_seed)]),
            "reference": _side(lambda: reference.embedding(ids, w_mu, w_rho, w_seed), [w_mu, w_rho]),
            "deterministic": _side(lambda: table(ids), table.trainable_variables),
        }

    return build


def lstm_case(batch, steps, n_in, hidden):
    """A Bayesian LSTM ``n_in -> hidden`` over ``steps`` steps at batch ``batch``; the output is h_seq."""

    def build(rng):
        x = tf.Variable(rng.normal(size=[batch, steps, n_in]).astype(np.float32))
        w_mu, w_rho, w_seed = _params([n_in + hidden, 4 * hidden], rng)
        b_mu, b_rho, b_seed = _params([4 * hidden], rng)
        args = (x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed)
        trainables = [x, w_mu, w_rho, b_mu, b_rho]
        recurrent = keras.layers.LSTM(hidden, return_sequences=True)
        recurrent.build((batch, steps, n_in))

        def forward_with_kl():
            h_seq, _, kl = ops.lstm(*args, kl_priors=DEFAULT_PRIORS)
            return h_seq, kl

        return {
            "fused": _side(
                lambda: ops.lstm(*args)[0], trainables, [(w_mu, w_rho, w_seed), (b_mu, b_rho, b_seed)], forward_with_kl
            ),
            "reference": _side(lambda: reference.lstm(*args)[0], trainables),
            "deterministic": _side(lambda: recurrent(x), [x] + recurrent.trainable_variables),
        }

    return build


# The standard cases of docs/design.md ("Benchmarks").
CASES = {
    "linear-s": linear_case(32, 1024, 1024),
    "linear-l": linear_case(32, 4096, 4096),
    "linear-b": linear_case(512, 1024, 1024),
    "conv2d": conv_case(16, (32, 32), 64, 64, (3, 3), "SAME"),
    "conv1d": conv_case(16, (512,), 64, 64, (5,), "VALID"),
    "embedding": embedding_case(50000, 128, [32, 64]),
    "lstm": lstm_case(32, 64, 128, 256),
}

# The in-op convolution on the standard shapes, for the engine choice in ops.conv2d (NOTES.md).
EXTRA_CASES = {
    "conv2d-inop": conv_case(16, (32, 32), 64, 64, (3, 3), "SAME", engine="fused"),
    "conv1d-inop": conv_case(16, (512,), 64, 64, (5,), "VALID", engine="fused"),
}


# gaussian_kl_analytic against sample_gaussian (measure_kl_analytic).
KL_ANALYTIC = "kl-analytic"


def _time_once(fn, inner):
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def allocator_stats_available():
    """Whether TensorFlow's CPU allocator keeps the statistics that peak memory is read from."""
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return False
    return True


def _peak_bytes(fn):
    """TensorFlow CPU allocator peak during fn() above the bytes in use before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    fn()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def _interleaved(fns, pairs, min_seconds):
    """Per-round times of each function, rounds alternating the order; each sample repeats a function
    until it lasts min_seconds, so fast ones are not timer noise and slow ones not repeated needlessly."""
    for fn in fns.values():  # trace and warm up
        fn()
        fn()
    names = list(fns)
    inner = {n: max(1, int(min_seconds / max(_time_once(fns[n], 1), 1e-6))) for n in names}
    times = {n: [] for n in names}
    for round_index in range(pairs):
        for n in names if round_index % 2 == 0 else names[::-1]:
            times[n].append(_time_once(fns[n], inner[n]))
    return times


def _median_ratio(numerators, denominators):
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def measure(name, build, pairs, min_seconds=0.02, log=None):
    """Rows for one case: forward and forward+backward, timed over ``pairs`` interleaved rounds, the
    peak memory of each side's training step where the allocator keeps statistics, then the fused
    ELBO steps against the fused forward+backward step."""
    sides = build(np.random.default_rng(0))
    peak_memory = allocator_stats_available()
    rows = []
    for pass_name, attr in (("forward", "forward"), ("forward+backward", "train_step")):
        fns = {s: getattr(sides[s], attr) for s in SIDES}
        times = _interleaved(fns, pairs, min_seconds)
        speedup = _median_ratio(times["reference"], times["fused"])
        vs_det = _median_ratio(times["fused"], times["deterministic"])
        row = {
            "case": name,
            "pass": pass_name,
            "fused_ms": 1e3 * statistics.median(times["fused"]),
            "reference_ms": 1e3 * statistics.median(times["reference"]),
            "deterministic_ms": 1e3 * statistics.median(times["deterministic"]),
            "speedup_vs_reference": speedup,
            "ratio_to_deterministic": vs_det,
        }
        if attr == "train_step" and peak_memory:
            for s in SIDES:
                row[f"peak_mb_{s}"] = _peak_bytes(fns[s]) / 2**20
        rows.append(row)
        if log:
            log(f"  {name:10s} {pass_name:17s} speedup {speedup:5.2f}x  vs deterministic {vs_det:5.2f}x")
    fused = sides["fused"]
    times = _interleaved(
        {"step": fused.train_step, "elbo": fused.elbo, "elbo_analytic": fused.elbo_analytic}, pairs, min_seconds
    )
    rows.append(
        {
            "case": name,
            "pass": "elbo",
            "step_ms": 1e3 * statistics.median(times["step"]),
            "elbo_ms": 1e3 * statistics.median(times["elbo"]),
            "elbo_analytic_ms": 1e3 * statistics.median(times["elbo_analytic"]),
            "elbo_ratio": _median_ratio(times["elbo"], times["step"]),
            "elbo_analytic_ratio": _median_ratio(times["elbo_analytic"], times["step"]),
        }
    )
    if log:
        ratios = rows[-1]
        log(f"  {name:10s} elbo / fwd+bwd {ratios['elbo_ratio']:5.2f}x  analytic {ratios['elbo_analytic_ratio']:5.2f}x")
    return rows


def measure_kl_analytic(name, pairs, min_seconds=0.02, log=None, shape=(4096, 4096)):
    """gaussian_kl_analytic forward+backward over a weight of ``shape`` against one sample_gaussian."""
    mu, rho, seed = _params(list(shape), np.random.default_rng(0))

    def kl_step():
        with tf.GradientTape() as tape:
            kl = ops.gaussian_kl_analytic(mu, rho)
        return tape.gradient(kl, [mu, rho])

    times = _interleaved(
        {"kl": _function(kl_step), "sample": _function(lambda: ops.sample_gaussian(mu, rho, seed))}, pairs, min_seconds
    )
    row = {
        "case": name,
        "pass": "kl_analytic fwd+bwd / sample",
        "kl_ms": 1e3 * statistics.median(times["kl"]),
        "sample_ms": 1e3 * statistics.median(times["sample"]),
        "ratio": _median_ratio(times["kl"], times["sample"]),
    }
    if log:
        log(f"  {name:10s} {row['pass']} {row['ratio']:5.2f}x")
    return [row]


def gradient_variance(estimator, batch=128, n_in=256, n_out=64, draws=200):
    """The gradient's variance over the noise at a fixed model and batch: the mean over the
    parameters of w_mu and w_rho of the variance, across ``draws`` seeds, of d(MSE)/d(parameter),
    for a Bayesian dense layer on a fixed linear-regression batch."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=[batch, n_in]).astype(np.float32))
    target = tf.constant((x.numpy() @ rng.normal(0, 0.1, [n_in, n_out])).astype(np.float32))
    w_mu = tf.constant(rng.normal(0, 0.1, [n_out, n_in]).astype(np.float32))
    w_rho = tf.constant(np.full([n_out, n_in], -3.0, np.float32))

    @tf.function(jit_compile=False)
    def grad(seeds):
        kwargs = {} if estimator == "reparameterization" else {"estimator": estimator, "x_seed": seeds[1]}
        with tf.GradientTape() as tape:
            tape.watch([w_mu, w_rho])
            loss = tf.reduce_mean(tf.square(ops.linear(x, w_mu, w_rho, seeds[0], **kwargs) - target))
        return tape.gradient(loss, [w_mu, w_rho])

    seeds = rng.integers(0, 2**31, [draws, 2, 2])
    samples = [grad(tf.constant(s)) for s in seeds]
    return {
        name: float(np.mean(np.var(np.stack([g[i].numpy() for g in samples]), axis=0)))
        for i, name in enumerate(("w_mu", "w_rho"))
    }


def format_table(rows):
    header = (
        f"{'case':10s} {'pass':17s} {'fused ms':>9s} {'ref ms':>9s} {'det ms':>9s} {'speedup':>8s} "
        f"{'vs det':>7s} {'peak MB fused/ref/det':>22s}"
    )
    lines = [header, "-" * len(header)]
    for r in (r for r in rows if "fused_ms" in r):
        peak = ""
        if "peak_mb_fused" in r:
            peak = f"{r['peak_mb_fused']:.1f}/{r['peak_mb_reference']:.1f}/{r['peak_mb_deterministic']:.1f}"
        elif r["pass"] == "forward+backward":
            peak = "not measured"
        lines.append(
            f"{r['case']:10s} {r['pass']:17s} {r['fused_ms']:9.3f} {r['reference_ms']:9.3f} "
            f"{r['deterministic_ms']:9.3f} {r['speedup_vs_reference']:7.2f}x {r['ratio_to_deterministic']:6.2f}x "
            f"{peak:>22s}"
        )
    elbo = [r for r in rows if r["pass"] == "elbo"]
    if elbo:
        header = (
            f"{'case':10s} {'fwd+bwd ms':>11s} {'elbo ms':>9s} {'elbo/step':>10s} {'analytic ms':>12s} "
            f"{'analytic/step':>14s}"
        )
        lines += [
            "",
            "ELBO step (forward, KL, backward) of the fused side against its forward+backward step",
            header,
            "-" * len(header),
        ]
        lines += [
            f"{r['case']:10s} {r['step_ms']:11.3f} {r['elbo_ms']:9.3f} {r['elbo_ratio']:9.2f}x "
            f"{r['elbo_analytic_ms']:12.3f} {r['elbo_analytic_ratio']:13.2f}x"
            for r in elbo
        ]
    lines += [
        f"\n{r['case']}: gaussian_kl_analytic fwd+bwd {r['kl_ms']:.3f} ms, one sample_gaussian "
        f"{r['sample_ms']:.3f} ms: {r['ratio']:.2f}x"
        for r in rows
        if "kl_ms" in r
    ]
    return "\n".join(lines)


def plot(rows, path):
    """Bar chart of the speedup over the reference and the ratio to the deterministic layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "fused_ms" in r]
    labels = [f"{r['case']}\n{r['pass'].replace('forward+backward', 'fwd+bwd')}" for r in rows]
    xs = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(rows) + 4), 4.5))
    axes[0].bar(xs, [r["speedup_vs_reference"] for r in rows], color="tab:blue")
    axes[0].axhline(1.0, color="black", linewidth=0.8)
    axes[0].set_title("speedup over the pure-TF reference (higher is better)")
    axes[1].bar(xs, [r["ratio_to_deterministic"] for r in rows], color="tab:orange")
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[1].set_title("time / deterministic Keras layer (lower is better)")
    for ax in axes:
        ax.set_xticks(xs, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def _writable(path):
    """Checked before the run, so that a long run does not end in an unwritable path."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {folder} is not a writable folder")
    return path


# The cases whose layers take an estimator.
LAYER_CASES = ("linear", "conv")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedbnn.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        help="comma-separated, from: "
        + ", ".join([*CASES, *EXTRA_CASES, KL_ANALYTIC])
        + " (default: all but the extra ones; the linear and conv ones with --estimator)",
    )
    parser.add_argument(
        "--pairs", type=_positive_int, default=30, help="interleaved timing rounds per pass (default: 30)"
    )
    parser.add_argument("--json", type=_writable, help="write the rows as JSON here")
    parser.add_argument("--plot", type=_writable, help="write a PNG chart here")
    parser.add_argument(
        "--estimator",
        default="reparameterization",
        choices=ops.ESTIMATORS,
        help="the fused and reference sides of the linear and conv cases use this estimator (default: "
        "reparameterization)",
    )
    parser.add_argument(
        "--gradient-variance",
        action="store_true",
        help="print the gradient variance at batch 128 of the three estimators instead (no --json, --plot)",
    )
    args = parser.parse_args(argv)
    if args.gradient_variance and (args.json or args.plot):
        parser.error("--gradient-variance prints its own table; --json and --plot do not apply to it")
    if args.gradient_variance:
        # The per-example estimators cut the noise's share by up to the batch size; how much of the
        # whole that is depends on the width: a wide input already averages much of it (n_in > B).
        rows = [
            {"estimator": e, "n_in": n_in, "n_out": n_out, **gradient_variance(e, n_in=n_in, n_out=n_out)}
            for n_in, n_out in ((32, 32), (256, 64))
            for e in ops.ESTIMATORS
        ]
        for row in rows:
            print(
                f"B=128 {row['n_in']:4d}->{row['n_out']:<3d} {row['estimator']:26s} var(dw_mu) {row['w_mu']:.3e}  "
                f"var(dw_rho) {row['w_rho']:.3e}"
            )
        return rows
    if args.cases is None:
        every = [*CASES, KL_ANALYTIC]
        names = every if args.estimator == "reparameterization" else [n for n in CASES if n.startswith(LAYER_CASES)]
    else:
        names = [c.strip() for c in args.cases.split(",") if c.strip()]
        if not names:
            parser.error("--cases names no case")
    known = {**CASES, **EXTRA_CASES, KL_ANALYTIC: None}
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(known)}")
    if args.estimator != "reparameterization":
        layers = [n for n in names if n.startswith(LAYER_CASES)]
        if layers != names:
            parser.error(f"--estimator applies to the linear and conv cases, not {sorted(set(names) - set(layers))}")
        known = {n: functools.partial(known[n], estimator=args.estimator) for n in names}
    measured_on = machine()
    print(
        f"fusedbnn bench: {len(names)} case(s), {args.pairs} rounds each, "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads, on "
        f"{measured_on['cpu']} ({measured_on['logical_cores']} logical cores, {measured_on['machine_class']})",
        file=sys.stderr,
    )
    if not allocator_stats_available():
        print(NO_ALLOCATOR_STATS, file=sys.stderr)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    rows = []
    for index, name in enumerate(names, 1):
        log(f"[{index}/{len(names)}] {name}")
        if name == KL_ANALYTIC:
            rows += measure_kl_analytic(name, args.pairs, log=log)
        else:
            rows += measure(name, known[name], args.pairs, log=log)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": measured_on, "rows": rows, "tensorflow": tf.__version__}, f, indent=2)
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
