"""How a meta-step's time and memory grow with the inner steps and the meta-batch size.

Second-order MAML keeps the activations of every inner step for its meta-gradient, so its
memory grows with the inner steps; gradient checkpointing stores only the fast weights
between steps and recomputes each; first-order MAML and Reptile differentiate nothing
through adaptation; iMAML (Rajeswaran et al. 2019) differentiates nothing through the inner
loop either, and solves for its implicit gradient instead. Each measurement runs in a fresh
process on Omniglot episodes (5-way 1-shot, conv4, `--queries` per class, inner learning
rate 0.4 as MAML's recipe; iMAML with regularization 2 and 5 conjugate-gradient steps;
Reptile with its Adam inner loop of rate 0.001) and reports the process's peak resident
memory (VmHWM) after a few meta-steps, the peak before its first step, and the seconds per
meta-step after the first. Two sweeps: the inner steps (`--inner_steps`) at meta-batch
`--omniglot_tasks`, and the meta-batch size (`--meta_batch_sizes`) at one inner step. It
writes a table, `cost_growth.json` and `cost_growth.png` to `--output_dir`.

    TF_META_DATA_DIR=../shared/data python benchmarks/cost_growth.py --queries=1
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import keras
import matplotlib
from absl import app, flags
from throughput import (  # also defines --queries, ...
    _batches,
    _dataset,
    _peak_mebibytes,
    fit_seconds_per_step,
)

import tf_meta
from tf_meta.backup import replace_atomically

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("inner_steps", ["1", "5", "20"], "Inner steps of the first sweep.")
flags.DEFINE_list("meta_batch_sizes", ["1", "8", "32", "128"], "Meta-batch sizes of the second.")
flags.DEFINE_string("output_dir", "benchmarks/results/cost_growth", "Where results are written.")
flags.DEFINE_integer("meta_steps", 3, "Meta-steps per measurement (the first is not timed).")
flags.DEFINE_string(
    "measure", None, "Internal: `configuration:inner_steps:tasks`, measured in this process."
)

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
    "MAML (first order)": lambda steps: tf_meta.MAML(
        tf_meta.models.conv4(ways=5), inner_learning_rate=0.4, inner_steps=steps, first_order=True
    ),
    "Reptile": lambda steps: tf_meta.Reptile(
        tf_meta.models.conv4(ways=5), inner_learning_rate=0.001, inner_steps=steps
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
    dataset = _dataset(_batches("omniglot", 4))  # of --omniglot_tasks tasks
    before = _peak_mebibytes()
    seconds = fit_seconds_per_step(learner, dataset, FLAGS.meta_steps)
    print(json.dumps({"before": before, "peak": _peak_mebibytes(), "seconds": seconds}))  # noqa: T201


def _run(name, steps, tasks):
    """One measurement in a fresh process: `{"before", "peak", "seconds"}`."""
    command = [
        sys.executable,
        __file__,
        f"--measure={name}:{steps}:{tasks}",
        f"--meta_steps={2 if FLAGS.smoke else FLAGS.meta_steps}",
        f"--queries={FLAGS.queries}",
        f"--omniglot_tasks={tasks}",
    ] + [f"--data_dir={FLAGS.data_dir}"] * bool(FLAGS.data_dir)
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _plot(results, inner_steps, sizes, tasks, path):
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    for name in results:
        by_steps = [results[name][f"{steps}:{tasks}"] for steps in inner_steps]
        by_size = [results[name][f"1:{size}"] for size in sizes]
        for column, (values, xs) in enumerate(((by_steps, inner_steps), (by_size, sizes))):
            xs = [int(x) for x in xs]
            axes[0, column].plot(xs, [1 / v["seconds"] for v in values], marker="o", label=name)
            axes[1, column].plot(
                xs, [v["peak"] - v["before"] for v in values], marker="o", label=name
            )
    for row, label in enumerate(("meta-steps per second", "memory added by the steps (MiB)")):
        axes[row, 0].set(xlabel=f"inner steps (meta-batch {tasks})", ylabel=label)
        axes[row, 1].set(xlabel="meta-batch size (1 inner step)", ylabel=label)
    for axis in axes.flat:
        axis.set_xscale("log")
    for axis in axes[0]:
        axis.set_yscale("log")
    for axis in axes[1]:  # some configurations add nothing measurable: linear below 10 MiB
        axis.set_yscale("symlog", linthresh=10)
        axis.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"Omniglot 5-way 1-shot, conv4, {FLAGS.queries} queries per class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    """Prints a Markdown table (one row per configuration, inner steps and meta-batch size)."""
    del argv
    if FLAGS.measure:
        name, steps, _ = FLAGS.measure.rsplit(":", 2)
        _measure(name, int(steps))
        return
    configurations, inner_steps, sizes, tasks = (
        list(CONFIGURATIONS),
        FLAGS.inner_steps,
        FLAGS.meta_batch_sizes,
        FLAGS.omniglot_tasks,
    )
    if FLAGS.smoke:  # `--smoke` (a flag of throughput.py): seconds, to check the script runs
        configurations, inner_steps, sizes, tasks = ["iMAML", "Reptile"], ["1", "2"], ["1", "2"], 2
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    results_path = os.path.join(FLAGS.output_dir, "cost_growth.json")
    results = {}
    if os.path.exists(results_path):  # a killed run resumes with what it measured
        with open(results_path) as file:
            results = json.load(file)
    lines = [
        f"Omniglot 5-way 1-shot, conv4, {FLAGS.queries} queries per class; "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        "| configuration | inner steps | meta-batch | peak RSS (MiB) | RSS before first step "
        "(MiB) | added by the steps (MiB) | s per meta-step |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    grid = [(steps, tasks) for steps in inner_steps] + [
        ("1", size) for size in sizes if ("1", size) != ("1", str(tasks))
    ]
    for name in configurations:
        results.setdefault(name, {})
        for steps, size in grid:
            key = f"{steps}:{size}"
            if key not in results[name]:
                results[name][key] = _run(name, steps, size)
                text = json.dumps(results, indent=1)
                replace_atomically(
                    results_path, lambda path, text=text: pathlib.Path(path).write_text(text)
                )
            values = results[name][key]
            lines.append(
                f"| {name} | {steps} | {size} | {values['peak']:.0f} | {values['before']:.0f} | "
                f"{values['peak'] - values['before']:.0f} | {values['seconds']:.2f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # noqa: T201 (progress)
    results = {name: results[name] for name in configurations}
    _plot(results, inner_steps, sizes, tasks, os.path.join(FLAGS.output_dir, "cost_growth.png"))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    app.run(main)
