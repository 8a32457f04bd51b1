"""How close the `embedding` case can come to keras.layers.Embedding on this machine (issues 4, 14).

    python benchmarks/embedding_floor.py [--rounds 30]

Beyond the deterministic step (a gather and an IndexedSlices gradient), a fused training step must
sample the looked-up weights once: the noise contract of docs/design.md fixes each element's normal
and forbids keeping eps or softplus(rho) beyond the op's output's size. Since issue 14 the forward
keeps eps * sigmoid(rho) of the looked-up elements (output-sized), so the backward draws no noise:
one noise pass per step is left. This script times that pass alone, with the library's fastest
kernels (`ops.sample_gaussian` on a contiguous [2048, 128] block, the embedding's element count,
no gather), next to the deterministic and fused steps and to the fused lookup alone on the case's
ids and on 2048 adjacent rows (the same arithmetic without scattered rows), interleaved in one
process as fusedbnn.bench does. The floor is

    deterministic step + (sample pass - empty call)

i.e. a fused step with no cost besides the noise arithmetic; its ratio to the deterministic step
is the best any implementation of this contract reaches here.
"""

import argparse
import statistics

import numpy as np
import tensorflow as tf

from fusedbnn import bench, ops


def build(rows=50000, dim=128, ids_shape=(32, 64)):
    rng = np.random.default_rng(0)
    sides = bench.embedding_case(rows, dim, list(ids_shape))(rng)
    looked_up = [int(np.prod(ids_shape)), dim]
    mu, rho, seed = bench._params([rows, dim], np.random.default_rng(1))
    ids = tf.Variable(rng.integers(0, rows, ids_shape), dtype=tf.int64)
    adjacent = tf.Variable(tf.reshape(tf.range(looked_up[0], dtype=tf.int64), ids_shape))
    block_mu, block_rho, block_seed = bench._params(looked_up, np.random.default_rng(2))
    return {
        "deterministic step": sides["deterministic"].train_step,
        "fused step": sides["fused"].train_step,
        "sample pass": tf.function(lambda: ops.sample_gaussian(block_mu, block_rho, block_seed)),
        "lookup, case's ids": tf.function(lambda: ops.embedding(ids, mu, rho, seed)),
        "lookup, adjacent rows": tf.function(lambda: ops.embedding(adjacent, mu, rho, seed)),
        "empty call": tf.function(lambda: tf.constant(0.0)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    fns = build()
    for fn in fns.values():
        fn()
        fn()
    inner = {name: max(1, int(0.02 / max(bench._time_once(fn, 1), 1e-6))) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for round_index in range(args.rounds):
        names = list(fns) if round_index % 2 == 0 else list(fns)[::-1]
        for name in names:
            times[name].append(bench._time_once(fns[name], inner[name]))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    det = ms["deterministic step"]
    floor = det + (ms["sample pass"] - ms["empty call"])
    print(f"{'':24} {'ms':>8} {'/ deterministic step':>22}")
    for name, value in ms.items():
        print(f"{name:24} {value:8.3f} {value / det:21.2f}x")
    print(f"{'floor':24} {floor:8.3f} {floor / det:21.2f}x   (target 1.60x = {1.6 * det:.3f} ms)")
    print(
        f"intra-op threads: {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}, "
        f"{args.rounds} interleaved rounds, medians"
    )


if __name__ == "__main__":
    main()
