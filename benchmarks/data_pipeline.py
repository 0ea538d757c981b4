"""Episode throughput of tf_meta.data.episodes on Omniglot, next to MAML's consumption rate.

Reports Omniglot 5-way 1-shot 15-query episodes per second with one thread and with the
default parallelism, the process's peak and current resident memory after 10,000 and
100,000 episodes, and the episodes per second that MAML (conv4, inner learning rate 0.4,
one inner step, meta-batch 32) consumes on the same machine in the same run.

    TF_META_DATA_DIR=../shared/data python benchmarks/data_pipeline.py
"""

import platform
import resource
import time

import keras
import psutil
import tensorflow as tf
from absl import app, flags

import tf_meta

FLAGS = flags.FLAGS
flags.DEFINE_integer("ways", 5, "Classes per episode.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_integer("queries", 15, "Query examples per class.")
flags.DEFINE_integer("meta_batch_size", 32, "Episodes per batch.")
flags.DEFINE_integer("episodes", 100_000, "Episodes drawn from the default-parallelism stream.")
flags.DEFINE_integer("single_thread_episodes", 20_000, "Episodes drawn single-threaded.")
flags.DEFINE_integer("maml_steps", 20, "Timed MAML meta-steps (after one warm-up step).")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_bool("smoke", False, "A few hundred episodes and one MAML step: checks the script.")


def _megabytes(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _stream(collection, single_threaded):
    dataset = tf_meta.data.episodes(
        collection,
        FLAGS.ways,
        FLAGS.shots,
        FLAGS.queries,
        FLAGS.meta_batch_size,
        seed=0,
        num_parallel_calls=1 if single_threaded else tf.data.AUTOTUNE,
    )
    if single_threaded:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        dataset = dataset.with_options(options)
    return dataset


def _rate(dataset, episodes, checkpoints=()):
    """Episodes per second, and memory readings when `checkpoints` episodes are reached."""
    batches = episodes // FLAGS.meta_batch_size
    iterator = iter(dataset)
    next(iterator)  # warm-up
    readings = {}
    start = time.perf_counter()
    for batch in range(1, batches + 1):
        next(iterator)
        drawn = batch * FLAGS.meta_batch_size
        for checkpoint in checkpoints:
            if checkpoint not in readings and drawn >= checkpoint:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                readings[checkpoint] = (peak, psutil.Process().memory_info().rss)
    return batches * FLAGS.meta_batch_size / (time.perf_counter() - start), readings


def _maml_rate(collection):
    learner = tf_meta.MAML(tf_meta.models.conv4(ways=FLAGS.ways), inner_learning_rate=0.4)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = _stream(collection, single_threaded=False)
    learner.fit(dataset, steps_per_epoch=1, verbose=0, shuffle=False)  # trace
    start = time.perf_counter()
    learner.fit(dataset, steps_per_epoch=FLAGS.maml_steps, verbose=0, shuffle=False)
    return FLAGS.maml_steps * FLAGS.meta_batch_size / (time.perf_counter() - start)


def main(argv):
    """Runs the measurements and prints a Markdown table."""
    del argv
    if FLAGS.smoke:
        FLAGS.episodes, FLAGS.single_thread_episodes, FLAGS.maml_steps = 640, 320, 1
        FLAGS.meta_batch_size = 4
    collection = tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir)
    single, _ = _rate(_stream(collection, True), FLAGS.single_thread_episodes)
    parallel, memory = _rate(
        _stream(collection, False), FLAGS.episodes, checkpoints=(10_000, FLAGS.episodes)
    )
    consumed = _maml_rate(collection)
    task = f"{FLAGS.ways}-way {FLAGS.shots}-shot {FLAGS.queries}-query"
    rows = [
        f"Omniglot (vinyals_train, 4112 classes) {task} episodes, meta-batch "
        f"{FLAGS.meta_batch_size}; {platform.processor() or platform.machine()}, "
        f"{psutil.cpu_count()} cores, TensorFlow {tf.__version__}, {time.strftime('%Y-%m-%d')}",
        "",
        "| measurement | value |",
        "| --- | --- |",
        f"| episodes/s, single-threaded | {single:,.0f} |",
        f"| episodes/s, default parallelism | {parallel:,.0f} |",
        f"| episodes/s consumed by MAML (conv4, 1 inner step, second order) | {consumed:,.1f} |",
        f"| sampler rate / MAML rate | {parallel / consumed:,.0f}x |",
    ]
    for checkpoint, (peak, current) in sorted(memory.items()):
        rows.append(
            f"| RSS after {checkpoint:,} episodes: peak / current | "
            f"{_megabytes(peak)} / {_megabytes(current)} |"
        )
    print("\n".join(rows))  # noqa: T201 (a benchmark script's report)


if __name__ == "__main__":
    app.run(main)
