"""tf.distribute: MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on loopback ports. Each run is a subprocess: logical devices and TF_CONFIG must be
set before TensorFlow starts."""

import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import subprocess_env

TIMEOUT_S = 150

MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import fusedbnn
    from fusedbnn.nn import Linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ np.ones((5, 1)) + 1.0).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    lr = 0.1
    with strategy.scope():
        inputs = keras.Input((5,))
        layer = Linear(5, 1, seed=3)
        model = fusedbnn.BayesianModel(inputs, layer(inputs))
        model.compile(optimizer=keras.optimizers.SGD(lr), loss=fusedbnn.losses.ELBOLoss("mse", kl_weight=0.02),
                      metrics=["mse"])
    w, b = layer.weights_distribution, layer.bias_distribution
    start = [v.numpy() for v in (w.mu, w.rho, b.mu, b.rho)]

    # One step on a global batch of 16: each replica gets 8 examples and draws its own noise.
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    local = lambda v: [t.numpy() for t in strategy.experimental_local_results(v.value)]
    seed_of = lambda name: next(v for v in layer.weights if v.path.endswith(f"/{name}_seed"))  # last call's
    w_seeds, b_seeds = local(seed_of("w")), local(seed_of("b"))

    # The same step by hand: the mean over replicas of each replica's ELBO gradient.
    grads = []
    for r in range(2):
        params = [tf.Variable(v) for v in start]
        with tf.GradientTape() as tape:
            pred = fusedbnn.ops.linear(x[8 * r:8 * r + 8], params[0], params[1], w_seeds[r],
                                       params[2], params[3], b_seeds[r])
            kl = (fusedbnn.ops.gaussian_kl(params[0], params[1], w_seeds[r], w.mu_prior, w.std_prior)
                  + fusedbnn.ops.gaussian_kl(params[2], params[3], b_seeds[r], b.mu_prior, b.std_prior))
            loss = tf.reduce_mean((pred - y[8 * r:8 * r + 8]) ** 2) + 0.02 * kl / 6
        grads.append(tape.gradient(loss, params))
    expected = [s - lr * (g0 + g1).numpy() / 2 for s, g0, g1 in zip(start, *grads)]
    replicas = [local(v) for v in (w.mu, w.rho, b.mu, b.rho)]

    # Both replicas run the model on the same input: their samples must differ.
    outputs = strategy.run(tf.function(lambda: model(tf.constant(x[:4]))))
    outputs = [t.numpy() for t in strategy.experimental_local_results(outputs)]

    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    print(json.dumps({
        "num_replicas": strategy.num_replicas_in_sync,
        "w_seeds": [s.tolist() for s in w_seeds],
        "replicas_equal": all(np.array_equal(*pair) for pair in replicas),
        "step_error": max(float(np.abs(r[0] - e).max()) for r, e in zip(replicas, expected)),
        "step_size": max(float(np.abs(r[0] - s).max()) for r, s in zip(replicas, start)),
        "output_difference": float(np.abs(outputs[0] - outputs[1]).max()),
        "data_losses": history.history["mse"],
    }))
""")

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import fusedbnn
    from fusedbnn.nn import Linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 5)).astype(np.float32)
    y = (x @ np.ones((5, 1))).astype(np.float32)
    with strategy.scope():
        inputs = keras.Input((5,))
        first = Linear(5, 8)  # no seed: the initial values are broadcast from the chief
        outputs = Linear(8, 1)(keras.layers.ReLU()(first(inputs)))
        model = fusedbnn.BayesianModel(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=fusedbnn.losses.ELBOLoss("mse"))
    initial = [v.numpy() for v in model.trainable_weights]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)
    history = model.fit(dataset, epochs=2, steps_per_epoch=6, verbose=0)
    np.savez(sys.argv[1], *[v.numpy() for v in model.trainable_weights], initial=np.concatenate(
        [v.ravel() for v in initial]), seed=next(v for v in first.weights if v.path.endswith("/w_seed")).numpy(), loss=np.array(history.history["loss"]))
""")


def run_python(script, args=(), env_extra=None):
    env = subprocess_env(**(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process):
    """(stdout, stderr) of a process, killed if it outlives TIMEOUT_S."""
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"process {process.pid} timed out after {TIMEOUT_S} s: {err[-2000:]}")
    assert process.returncode == 0, err[-4000:]
    return out


@pytest.mark.slow
def test_mirrored_strategy_all_reduces_gradients_and_replicas_draw_their_own_noise():
    result = json.loads(finish(run_python(MIRRORED)).strip().splitlines()[-1])
    assert result["num_replicas"] == 2
    assert result["w_seeds"][0] != result["w_seeds"][1], "each replica draws its own seed"
    assert result["output_difference"] > 1e-4, "replicas sample different weights for the same input"
    assert result["replicas_equal"], "the all-reduced update keeps the replicas' variables identical"
    # The step equals the mean of the replicas' gradients, each under its own noise.
    assert result["step_error"] < 1e-5 * max(1.0, result["step_size"]) and result["step_size"] > 1e-3
    assert result["data_losses"][-1] < 0.5 * result["data_losses"][0], "fit trains"


MIRRORED_EMBEDDING = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import fusedbnn
    from fusedbnn import ops
    from fusedbnn.nn import Embedding

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (32, 4))
    y = rng.normal(size=(32, 4, 8)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    traced = []
    from_variables = ops._ops.fused_bnn_embedding_from_variables
    ops._ops.fused_bnn_embedding_from_variables = lambda *a, **k: (traced.append(1), from_variables(*a, **k))[1]

    def train():
        with strategy.scope():
            inputs = keras.Input((4,), dtype="int64")
            layer = Embedding(100, 8, seed=3)
            model = fusedbnn.BayesianModel(inputs, layer(inputs))
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss=fusedbnn.losses.ELBOLoss("mse", kl_weight=0.01))
        model.fit(ids, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return [v.numpy() for v in layer.trainable_variables]

    in_place = train()
    replica_lookups = len(traced)
    ops._resource_variables = lambda *values: None  # every lookup through ReadVariableOp instead
    read = train()
    print(json.dumps({"replica_lookups": replica_lookups, "lookups_after": len(traced),
                      "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(in_place, read))}))
""")


def test_mirrored_embedding_reads_each_replicas_variables_in_place():
    """Under MirroredStrategy the replicas look up their own copies of the tables in place (the
    variables' handles exist only in a replica context), training exactly as ordinary reads do."""
    result = json.loads(finish(run_python(MIRRORED_EMBEDDING)).strip().splitlines()[-1])
    assert result["replica_lookups"] >= 2, "each replica traced the in-place lookup"
    assert result["lookups_after"] == result["replica_lookups"], "the second run read the variables"
    assert result["max_difference"] == 0.0


def free_loopback_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_trains_two_local_workers_to_equal_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(run_python(WORKER, [str(tmp_path / f"worker{index}.npz")], {"TF_CONFIG": tf_config}))
    try:
        for worker in workers:
            finish(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    results = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]
    variables = [name for name in results[0].files if name.startswith("arr_")]
    assert len(variables) == 8  # mu and rho of two weights and two biases
    for name in variables + ["initial", "loss"]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)
    trained = np.concatenate([results[0][name].ravel() for name in variables])
    assert np.abs(trained - results[0]["initial"]).max() > 1e-2
    assert not np.array_equal(results[0]["seed"], results[1]["seed"]), "each worker draws its own noise"
    assert results[0]["loss"][-1] < results[0]["loss"][0]
