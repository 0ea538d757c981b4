"""Time per meta-step of each learner, as a ratio to second-order MAML, in one run.

Omniglot 5-way 1-shot 15-query episodes, conv4, `--inner_steps` inner steps (inner
learning rate 0.4; Reptile: 5 Adam steps), meta-batch `--meta_batch_size`. The episodes are
drawn once and held in memory; each learner's Keras train function is traced first, then
the learners are timed with `train_on_batch` in turns (A B C ... A B C ...) for `--rounds`
rounds so that the machine's drift affects all of them alike. The table reports the median
time per step and its ratio to second-order MAML's.

    TF_META_DATA_DIR=../shared/data python benchmarks/step_cost.py
"""

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_meta

FLAGS = flags.FLAGS
flags.DEFINE_integer("meta_batch_size", 8, "Tasks per meta-step.")
flags.DEFINE_integer("steps", 5, "Meta-steps per timed turn.")
flags.DEFINE_integer("inner_steps", 1, "Inner steps of MAML, Meta-SGD and ANIL.")
flags.DEFINE_integer("rounds", 4, "Turns per learner.")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_enum(
    "strategy", "default", tf_meta.distribution.STRATEGIES, "Distribution strategy (see README)."
)


def _learners():
    def head():
        return tf_meta.models.conv4(ways=5)

    inner = {"inner_learning_rate": 0.4, "inner_steps": FLAGS.inner_steps}
    return {
        "MAML (second order)": tf_meta.MAML(head(), **inner),
        "MAML (first order)": tf_meta.MAML(head(), first_order=True, **inner),
        "Meta-SGD": tf_meta.MetaSGD(head(), **inner),
        "ANIL (second order)": tf_meta.ANIL(head(), **inner),
        "Reptile (5 Adam steps)": tf_meta.Reptile(head(), inner_learning_rate=0.001),
        "Prototypical network": tf_meta.PrototypicalNetwork(tf_meta.models.conv4(ways=None)),
    }


def main(argv):
    """Prints the per-step times and their ratios to MAML."""
    del argv
    keras.utils.set_random_seed(0)
    episodes = tf_meta.data.episodes(
        tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir),
        ways=5,
        shots=1,
        queries=15,
        meta_batch_size=FLAGS.meta_batch_size,
        seed=0,
    )
    batches = list(episodes.take(FLAGS.steps))
    strategy = tf_meta.distribution.strategy_from_name(FLAGS.strategy)
    with strategy.scope():
        learners = _learners()
        for learner in learners.values():
            learner.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
    for learner in learners.values():
        learner.train_on_batch(*batches[0])  # trace
    times = {name: [] for name in learners}
    for _ in range(FLAGS.rounds):
        for name, learner in learners.items():
            start = time.perf_counter()
            for x, y in batches:
                learner.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / FLAGS.steps)
    reference = np.median(times["MAML (second order)"])
    rows = [
        f"Omniglot 5-way 1-shot 15-query, conv4, {FLAGS.inner_steps} inner step(s), meta-batch "
        f"{FLAGS.meta_batch_size}, {strategy.num_replicas_in_sync} replica(s), "
        f"TensorFlow {tf.__version__}, {time.strftime('%Y-%m-%d')}; median of {FLAGS.rounds} "
        f"interleaved turns of {FLAGS.steps} steps",
        "",
        "| learner | seconds per meta-step | ratio to MAML (second order) |",
        "| --- | --- | --- |",
    ]
    for name, values in times.items():
        median = np.median(values)
        rows.append(f"| {name} | {median:.3f} | {median / reference:.2f} |")
    print("\n".join(rows))  # noqa: T201 (a benchmark script's report)


if __name__ == "__main__":
    app.run(main)
