"""Peak memory of a meta-step against the number of inner steps: iMAML and MAML.

Second-order MAML keeps the activations of every inner step for its meta-gradient, so its
memory grows with the inner steps; gradient checkpointing stores only the fast weights
between steps and recomputes each; iMAML (Rajeswaran et al. 2019) differentiates nothing
through the inner loop, and its memory should not depend on the steps at all. Each
configuration runs in a fresh process on Omniglot episodes (5-way 1-shot, conv4, meta-batch
`--omniglot_tasks`, `--queries` per class, inner learning rate 0.4 as MAML's recipe; iMAML
with regularization 2 and 5 conjugate-gradient steps), and reports the process's peak
resident memory (VmHWM) after a few meta-steps, the peak before its first step, and the
seconds per meta-step after the first.

    TF_META_DATA_DIR=../shared/data python benchmarks/inner_steps_memory.py
"""

import json
import subprocess
import sys
import time

import keras
from absl import app, flags
from throughput import _batches, _dataset, _peak_mebibytes  # also defines --queries, ...

import tf_meta

FLAGS = flags.FLAGS
flags.DEFINE_list("inner_steps", ["1", "5", "20"], "Inner steps of each measurement.")
flags.DEFINE_integer("meta_steps", 3, "Meta-steps per measurement (the first is not timed).")
flags.DEFINE_string("measure", None, "Internal: `configuration:inner_steps` in this process.")

CONFIGURATIONS = {
    "iMAML": lambda steps: tf_meta.IMAML(
        tf_meta.models.conv4(ways=5), inner_learning_rate=0.4, inner_steps=steps
    ),
    "MAML (second order)": lambda steps: tf_meta.MAML(
        tf_meta.models.conv4(ways=5), inner_learning_rate=0.4, inner_steps=steps
    ),
    "MAML, gradient checkpointing": lambda steps: tf_meta.MAML(
        tf_meta.models.conv4(ways=5),
        inner_learning_rate=0.4,
        inner_steps=steps,
        gradient_checkpointing=True,
    ),
}


def _measure(name, steps):
    """Runs one configuration in this process and prints its memory and speed as JSON."""
    keras.utils.set_random_seed(0)
    learner = CONFIGURATIONS[name](steps)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = _dataset(_batches("omniglot", 4))
    before = _peak_mebibytes()
    ends = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    learner.fit(dataset, steps_per_epoch=FLAGS.meta_steps, verbose=0, callbacks=[clock])
    seconds = (ends[-1] - ends[0]) / (len(ends) - 1)
    print(json.dumps({"before": before, "peak": _peak_mebibytes(), "seconds": seconds}))  # noqa: T201


def main(argv):
    """Prints a Markdown table: one row per configuration and number of inner steps."""
    del argv
    if FLAGS.measure:
        name, steps = FLAGS.measure.rsplit(":", 1)
        _measure(name, int(steps))
        return
    configurations, inner_steps, tasks = (
        list(CONFIGURATIONS),
        FLAGS.inner_steps,
        FLAGS.omniglot_tasks,
    )
    if FLAGS.smoke:  # `--smoke` (a flag of throughput.py): seconds, to check the script runs
        configurations, inner_steps, tasks = ["iMAML"], ["1", "2"], 2
    lines = [
        f"Omniglot 5-way 1-shot, conv4, meta-batch {tasks}, {FLAGS.queries} "
        f"queries per class; {time.strftime('%Y-%m-%d')}",
        "",
        "| configuration | inner steps | peak RSS (MiB) | RSS before first step (MiB) | "
        "added by the steps (MiB) | s per meta-step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in configurations:
        for steps in inner_steps:
            command = [
                sys.executable,
                __file__,
                f"--measure={name}:{steps}",
                f"--meta_steps={2 if FLAGS.smoke else FLAGS.meta_steps}",
                f"--queries={FLAGS.queries}",
                f"--omniglot_tasks={tasks}",
            ] + [f"--data_dir={FLAGS.data_dir}"] * bool(FLAGS.data_dir)
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            values = json.loads(result.stdout.strip().splitlines()[-1])
            lines.append(
                f"| {name} | {steps} | {values['peak']:.0f} | {values['before']:.0f} | "
                f"{values['peak'] - values['before']:.0f} | {values['seconds']:.2f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # noqa: T201 (progress)
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    app.run(main)
