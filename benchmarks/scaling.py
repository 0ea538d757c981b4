"""Scaling of MAML's meta-step across replicas and worker processes, and the cost of backups.

MAML (second order, one inner step, inner learning rate 0.4) on Omniglot 5-way 1-shot
15-query episodes with conv4, global meta-batch `--meta_batch_size`, trained with `fit` on
the sharded episode stream (`tf_meta.distribution.distribute_stream`):
- 1 replica (no strategy) and 2 replicas (`MirroredStrategy` over two logical CPU devices),
  in this process, timed in interleaved rounds so that the machine's drift affects both;
- 1 and 2 worker processes (`MultiWorkerMirroredStrategy`, one device each, on 127.0.0.1).
For each: the first step (tracing), then the median seconds per meta-step after it, and the
per-step communication: the median time of an all-reduce of the meta-gradient (every
trainable weight) under that strategy. Last, the wall-clock cost per epoch of
`BackupAndRestore` through `tf_meta.training.train`, from interleaved runs with and without.

    TF_META_DATA_DIR=../shared/data python benchmarks/scaling.py
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_meta

FLAGS = flags.FLAGS
flags.DEFINE_integer("meta_batch_size", 32, "Tasks per global meta-step.")
flags.DEFINE_integer("steps", 10, "Timed meta-steps per round.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_integer("backup_epochs", 3, "Epochs per round of the backup measurement.")
flags.DEFINE_integer("backup_steps", 5, "Meta-steps per epoch of the backup measurement.")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_bool("smoke", False, "A seconds-long run on tiny sizes, to check the script.")
flags.DEFINE_integer("worker_index", None, "Internal: run as this worker of a cluster.")
flags.DEFINE_list("worker_ports", None, "Internal: the ports of the cluster's workers.")
flags.DEFINE_string("output", None, "Internal: where worker 0 writes its measurement.")


def _configure():
    """The cluster of a worker, or two logical CPU devices, before TensorFlow starts."""
    if FLAGS.worker_index is not None:
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in FLAGS.worker_ports]},
                "task": {"type": "worker", "index": FLAGS.worker_index},
            }
        )
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


def _learner(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        learner = tf_meta.MAML(tf_meta.models.conv4(ways=5), inner_learning_rate=0.4, inner_steps=1)
        learner.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    return learner


def _stream(images, start_step, context):
    return tf_meta.data.episodes(
        images,
        5,
        1,
        15,
        FLAGS.meta_batch_size,
        seed=0,
        start_step=start_step,
        input_context=context,
    )


class _StepTimes(keras.callbacks.Callback):
    """Records the time at the start of training and at the end of every batch."""

    def on_train_begin(self, logs=None):
        self.times = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def _all_reduce_seconds(strategy, learner, repeats):
    """Median time of one all-reduce of tensors shaped like the meta-gradient."""
    shapes = [variable.shape for variable in learner.trainable_variables]

    @tf.function
    def all_reduce():
        def replica():
            gradients = [tf.ones(shape) for shape in shapes]
            return tf.distribute.get_replica_context().all_reduce("sum", gradients)

        return strategy.run(replica)

    all_reduce()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        all_reduce()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _measure(strategy, images, learner=None, times=None):
    """Trains `--steps` (+1) meta-steps; returns the first step and the per-step times."""
    learner = learner or _learner(strategy)
    start_step = int(learner.optimizer.iterations.numpy())
    clock = _StepTimes()
    learner.fit(
        tf_meta.distribution.distribute_stream(
            strategy, lambda context: _stream(images, start_step, context)
        ),
        steps_per_epoch=FLAGS.steps + 1,
        callbacks=[clock],
        verbose=0,
    )
    intervals = np.diff(clock.times)
    return learner, float(intervals[0]), list(intervals[1:])


def _worker():
    """One worker of the multi-worker measurement."""
    strategy = tf_meta.distribution.strategy_from_name("multi_worker")
    images = tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir)
    learner, first, steps = _measure(strategy, images)
    for _ in range(FLAGS.rounds - 1):
        steps += _measure(strategy, images, learner)[2]
    result = {
        "first": first,
        "step": float(np.median(steps)),
        "all_reduce": _all_reduce_seconds(strategy, learner, 20),
        "replicas": strategy.num_replicas_in_sync,
    }
    if FLAGS.worker_index == 0:
        with open(FLAGS.output, "w") as file:
            json.dump(result, file)


def _cluster(workers):
    """Runs `workers` processes of this script as a cluster; returns worker 0's result."""
    sockets = [socket.socket() for _ in range(workers)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [str(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "result.json")
        flags_to_pass = [
            f"--{name}={getattr(FLAGS, name)}" for name in ("meta_batch_size", "steps", "rounds")
        ] + ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    f"--worker_index={index}",
                    f"--worker_ports={','.join(ports)}",
                    f"--output={output}",
                    *flags_to_pass,
                ],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(workers)
        ]
        for process in processes:
            _, error = process.communicate(timeout=1800)
            if process.returncode:
                raise RuntimeError(f"A worker failed:\n{error[-3000:]}")
        with open(output) as file:
            return json.load(file)


def _backup_cost(images):
    """Seconds per epoch that `BackupAndRestore` adds, from interleaved runs."""
    strategy = tf.distribute.get_strategy()
    learners = {False: _learner(strategy), True: _learner(strategy)}
    seconds = {False: [], True: []}
    with tempfile.TemporaryDirectory() as directory:
        for learner in learners.values():  # trace
            tf_meta.training.train(
                learner, lambda s, c: _stream(images, s, c), 1, FLAGS.backup_steps, verbose=0
            )
        for _ in range(FLAGS.rounds):
            for backup, learner in learners.items():
                done = int(learner.optimizer.iterations.numpy()) // FLAGS.backup_steps
                start = time.perf_counter()
                tf_meta.training.train(
                    learner,
                    lambda s, c: _stream(images, s, c),
                    epochs=done + FLAGS.backup_epochs,
                    steps_per_epoch=FLAGS.backup_steps,
                    backup_directory=os.path.join(directory, "backup") if backup else None,
                    verbose=0,
                )
                seconds[backup].append((time.perf_counter() - start) / FLAGS.backup_epochs)
    with_backup, without = np.median(seconds[True]), np.median(seconds[False])
    return with_backup - without, without


def main(argv):
    """Prints the scaling table and the backup cost."""
    del argv
    if FLAGS.smoke:
        FLAGS.meta_batch_size, FLAGS.steps, FLAGS.rounds = 4, 2, 1
        FLAGS.backup_epochs, FLAGS.backup_steps = 1, 2
    _configure()
    if FLAGS.worker_index is not None:
        _worker()
        return
    images = tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir)
    strategies = {
        "1 replica (no strategy)": tf.distribute.get_strategy(),
        "2 replicas (MirroredStrategy, 2 logical CPUs)": tf_meta.distribution.strategy_from_name(
            "mirrored"
        ),
    }
    learners, first, steps = {}, {}, {name: [] for name in strategies}
    for _ in range(FLAGS.rounds):
        for name, strategy in strategies.items():
            learner, seconds, intervals = _measure(strategy, images, learners.get(name))
            learners[name] = learner
            first.setdefault(name, seconds)
            steps[name] += intervals
    results = {
        name: {
            "first": first[name],
            "step": float(np.median(steps[name])),
            "all_reduce": _all_reduce_seconds(strategy, learners[name], 20),
        }
        for name, strategy in strategies.items()
    }
    for workers in (1, 2):
        results[f"{workers} worker process(es) (MultiWorkerMirroredStrategy)"] = _cluster(workers)
    reference = results["1 replica (no strategy)"]["step"]
    rows = [
        f"MAML (second order, 1 inner step) on Omniglot 5-way 1-shot 15-query, conv4, global "
        f"meta-batch {FLAGS.meta_batch_size}; TensorFlow {tf.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; medians over {FLAGS.rounds} rounds of {FLAGS.steps} steps",
        "",
        "| configuration | first step (s) | s per meta-step | meta-steps per s | speed vs 1 "
        "replica | all-reduce of the meta-gradient (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        rows.append(
            f"| {name} | {result['first']:.1f} | {result['step']:.3f} | "
            f"{1 / result['step']:.2f} | {reference / result['step']:.2f} | "
            f"{1000 * result['all_reduce']:.2f} |"
        )
    added, epoch = _backup_cost(images)
    rows += [
        "",
        f"BackupAndRestore: {1000 * added:.0f} ms per epoch of {FLAGS.backup_steps} meta-steps "
        f"({100 * added / epoch:.1f}% of the epoch's {epoch:.2f} s), median of "
        f"{FLAGS.rounds} interleaved rounds of {FLAGS.backup_epochs} epochs",
    ]
    print("\n".join(rows))  # noqa: T201 (a benchmark script's report)


if __name__ == "__main__":
    app.run(main)
