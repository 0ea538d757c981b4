"""Learned optimizers against tuned Adam and SGD with momentum, in and out of distribution.

For each family (`--families`): tunes Adam's and SGD-momentum's learning rates with
KerasTuner's Bayesian optimization (equal trial budgets), meta-trains `MLPRule` (starting
as tuned Adam), `LSTMRule` and `ControllerRule` (starting as tuned SGD with momentum) with
`OptimizerMetaLearner` (truncated backpropagation), and compares all of them on
held-out tasks in three settings: the meta-training horizon, 5x that horizon (the learned
optimizers told the longer `training_steps`), and a network twice as wide and twice as deep.
Then measures the per-step cost of `LearnedOptimizer` against Adam in an ordinary `fit` of
the Omniglot conv4 (alternating turns). Writes `results.md`, `results.json` and one PNG per
family and setting to `--output_dir`; meta-training backs up every epoch there, so a killed
run resumes.

    TF_META_DATA_DIR=../shared/data taskset -c 1 python benchmarks/learned_optimizers.py
"""

import json
import os
import time

import keras
import matplotlib
import numpy as np
from absl import app, flags

import tf_meta
from tf_meta.jobs import learned_optimizer as job

matplotlib.use("Agg")  # the job's plots are written as files
FLAGS = flags.FLAGS
flags.DEFINE_list("families", ["sinusoid", "omniglot"], "Task families.")
flags.DEFINE_integer("overhead_steps", 60, "Timed steps per turn of the overhead measurement.")
# The job's flags (rules, meta_steps, run_length, ...), with this benchmark's defaults:
FLAGS.set_default("meta_steps", 2000)
FLAGS.set_default("tuning_trials", 12)
FLAGS.set_default("output_dir", "benchmarks/results/learned_optimizers")
flags.DEFINE_bool("smoke", False, "Tiny budgets on sinusoid: checks the script.")


def _family(name):
    os.makedirs(os.path.join(FLAGS.output_dir, name), exist_ok=True)
    directory = os.path.join(FLAGS.output_dir, name)
    train, test = job.families(name, FLAGS.data_dir)
    _, wide = job.families(name, FLAGS.data_dir, wide=True)
    steps = FLAGS.run_length
    rates, trained, seconds = job.tune_and_meta_train(train, directory)
    for rule_name, rule in trained.items():
        np.savez(os.path.join(directory, f"{rule_name}_rule.npz"), *rule.get_weights())
    if "controller" in trained:
        job.plot_schedule(
            test,
            trained["controller"],
            steps,
            1,
            os.path.join(directory, "controller_schedule.png"),
        )
    settings = {
        "in distribution": (test, steps, None),
        "5x horizon": (test, 5 * steps, None),
        "2x wider and deeper": (test, steps, wide.build_model),
    }
    sections, record = [], {"rates": rates, "meta_seconds": seconds, "settings": {}}
    for setting, (family, length, build) in settings.items():
        contenders = {
            **job.baselines(rates["adam"], rates["sgd"]),
            **job.learned(trained, length),
        }
        start = time.time()
        results = job.curves(family, contenders, FLAGS.tasks, length, 1, build)
        rows = job.summary(results, "Adam (tuned)")
        record["settings"][setting] = rows
        sections.append(
            f"### {train.name}: {setting} ({time.time() - start:.0f} s)\n\n"
            + job.table(rows, length, "Adam (tuned)")
        )
        job.plot(
            results,
            os.path.join(directory, f"curves_{setting.replace(' ', '_')}.png"),
            f"{train.name}: {setting}",
        )
    header = (
        f"## {train.name}\n\nTuned rates: Adam {rates['adam']:.3g}, SGD momentum "
        f"{rates['sgd']:.3g} ({FLAGS.tuning_trials} trials each). Meta-training "
        f"({FLAGS.meta_steps} meta-steps of {FLAGS.meta_batch_size} problems x "
        f"{FLAGS.truncation_length} steps, runs of {steps}, loss floor {FLAGS.loss_floor:g}): "
        + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    )
    return header + "\n\n" + "\n\n".join(sections), record


def _overhead():
    """Seconds per `fit` step of the Omniglot conv4, Adam against LearnedOptimizer."""
    generator = np.random.default_rng(0)
    inputs = generator.random((32 * FLAGS.overhead_steps, 28, 28, 1), dtype=np.float32)
    labels = generator.integers(0, 5, len(inputs))
    times = {"Adam": [], "LearnedOptimizer": []}
    for _ in range(3):
        for name in times:
            model = tf_meta.models.conv4(ways=5)
            optimizer = (
                keras.optimizers.Adam(1e-3)
                if name == "Adam"
                else tf_meta.optimizers.LearnedOptimizer(
                    tf_meta.optimizers.MLPRule(1e-3, FLAGS.overhead_steps)
                )
            )
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
            model.fit(inputs[:64], labels[:64], batch_size=32, verbose=0)  # compile
            start = time.time()
            model.fit(inputs, labels, batch_size=32, verbose=0)
            times[name].append((time.time() - start) / FLAGS.overhead_steps)
    ratios = np.array(times["LearnedOptimizer"]) / np.array(times["Adam"])
    return (
        "## Per-step cost in `fit` (Omniglot conv4, 112k weights, batch 32, three alternating"
        " turns)\n\n| optimizer | seconds per step (turns) |\n| --- | --- |\n"
        + "\n".join(
            f"| {name} | {' / '.join(f'{value:.4f}' for value in values)} |"
            for name, values in times.items()
        )
        + f"\n\nRatio LearnedOptimizer / Adam: {' / '.join(f'{r:.2f}' for r in ratios)}"
    ), times


def main(argv):
    del argv
    if FLAGS.smoke:
        FLAGS.families, FLAGS.meta_steps, FLAGS.run_length = ["sinusoid"], 2, 20
        FLAGS.truncation_length, FLAGS.meta_batch_size, FLAGS.tuning_trials = 10, 2, 2
        FLAGS.tuning_tasks, FLAGS.tasks, FLAGS.overhead_steps = 1, 2, 2
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    sections, record = [], {}
    for name in FLAGS.families:
        section, record[name] = _family(name)
        sections.append(section)
        print(section, flush=True)  # noqa: T201 (a benchmark's report, as it is measured)
    section, record["overhead"] = _overhead()
    sections.append(section)
    print(section, flush=True)  # noqa: T201
    with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as file:
        file.write("\n\n".join(sections) + "\n")
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as file:
        json.dump(record, file, indent=1, default=float)


if __name__ == "__main__":
    app.run(main)
