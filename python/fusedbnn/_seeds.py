"""Seeds of the layers: initial values derived per parameter, noise distinct per replica."""

import contextlib
import zlib

import tensorflow as tf

from fusedbnn._loader import load_op_library


def derived_seed(seed, name):
    """A seed for the part ``name`` of something seeded with ``seed``, or None if ``seed`` is None.

    Hashing the name (not adding numbered offsets) keeps the parts of one layer, and of layers given
    neighbouring seeds, from starting with the same draws.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{int(seed)}/{name}".encode()) & 0x7FFFFFFF


def on_host():
    """A device scope for the layers' seed and flag variables: host memory, where the fused ops read
    seeds (HostMemory inputs), so that a GPU op never waits for a device-to-host copy. Under a
    tf.distribute strategy, which places its own variables, no scope."""
    return contextlib.nullcontext() if tf.distribute.has_strategy() else tf.device("/CPU:0")


def next_seed(generator):
    """The next seed ([2] int64) of a ``keras.random.SeedGenerator``, as ``generator.next()`` gives
    it, but read and advanced in one op under the state variable's lock (``FusedBnn>NextSeed``):
    ``next()`` reads, then assigns in a second op, so calls of one layer running at once (threads, a
    server's concurrent requests) drew the same noise. Under a tf.distribute strategy, whose
    replicas each advance their own copy of the state, ``next()``."""
    if tf.distribute.has_strategy():
        return generator.next()
    return load_op_library().fused_bnn_next_seed(generator.state.handle)


def replica_seed(seed):
    """``seed``, made distinct per replica under a tf.distribute strategy with several replicas.

    Replicas run the same graph with mirrored seed generators; without this, every replica would
    draw the same noise. The replica id is global across workers, so workers differ too.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int64)
    return tf.cast(tf.random.experimental.stateless_fold_in(seed, replica_id), seed.dtype)
