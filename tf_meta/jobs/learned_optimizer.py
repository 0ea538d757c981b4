"""Meta-trains learned optimizers on a task family and compares them with tuned Adam and SGD.

Run `tf-meta-learned-optimizer --help` for the flags. The job:

1. tunes the learning rate of Adam and of SGD with momentum 0.9 on the family's
   meta-training tasks with KerasTuner's Bayesian optimization (the same trial budget each;
   objective: the mean final training loss of a run of `--run_length` steps);
2. meta-trains each rule of `--rules` (`mlp`: `MLPRule`, whose base step is tuned Adam's
   learning rate, so that it starts as tuned Adam; `lstm`: `LSTMRule`) with
   `OptimizerMetaLearner.fit`, with crash-safe backups in `--output_dir`;
3. trains fresh networks on held-out tasks with every optimizer (same initializations and
   minibatches for all) and writes `results.md` (loss after the run with 95% intervals over
   tasks, the steps each needs to reach tuned Adam's final loss, meta-training time),
   `results.json` and `curves.png`.
"""

import functools
import json
import os
import time

import keras
import keras_tuner
import matplotlib.pyplot as plt
import numpy as np
from absl import flags

from tf_meta import backup, evaluation, jobs, optimizers
from tf_meta.data import load_omniglot

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "family",
    "sinusoid",
    ["sinusoid", "omniglot", "omniglot_conv"],
    "The task family: sinusoid regression by an MLP, 5-way Omniglot by an MLP on the pixels or "
    "by a small conv net.",
)
flags.DEFINE_list("rules", ["mlp", "lstm", "controller"], "Rules: mlp, lstm, controller.")
flags.DEFINE_integer("meta_steps", 1000, "Meta-training steps of each rule.")
flags.DEFINE_integer("run_length", 200, "Inner steps of a run (meta-training and evaluation).")
flags.DEFINE_integer("truncation_length", 20, "Inner steps per meta-step.")
flags.DEFINE_integer("meta_batch_size", 8, "Inner problems per meta-step.")
flags.DEFINE_enum("estimator", "truncated_backprop", optimizers.ESTIMATORS, "Meta-gradient.")
flags.DEFINE_float("meta_learning_rate", 1e-3, "Adam learning rate of meta-training.")
flags.DEFINE_float(
    "loss_floor",
    0.0,
    "Added to the inner loss inside the meta-objective's log (OptimizerMetaLearner's "
    "`loss_floor`): near the loss that counts as solved, it stops rewarding the rule for "
    "driving solved tasks further down.",
)
flags.DEFINE_integer("tuning_trials", 10, "Bayesian-optimization trials per baseline.")
flags.DEFINE_integer("tuning_tasks", 4, "Meta-training tasks averaged by a tuning trial.")
flags.DEFINE_integer("tasks", 20, "Held-out tasks of the comparison.")
flags.DEFINE_integer("seed", 0, "Seed of meta-training; held-out tasks use seed + 1.")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_string("output_dir", "results/learned_optimizer", "Where results are written.")
flags.DEFINE_integer("verbose", 2, "Keras verbosity of meta-training.")

EVERY = 10  # steps between two measurements of a training curve


def families(name: str, data_dir: str | None = None, wide: bool = False):
    """`(meta-training family, held-out family)`; `wide` doubles the width and depth.

    Omniglot's held-out family draws its characters from the evaluation alphabets.
    """
    if name == "sinusoid":
        hidden = (80, 80, 80, 80) if wide else (40, 40)
        family = optimizers.sinusoid_family(hidden_units=hidden)
        return family, family
    network = "conv" if name == "omniglot_conv" else "mlp"
    if network == "conv":
        hidden = (32, 32, 32, 32) if wide else (16, 16)
    else:
        hidden = (128, 128) if wide else (64,)
    train, test = (
        optimizers.image_family(
            *load_omniglot(split, data_dir=data_dir), 5, hidden, network=network
        )
        for split in ("background", "evaluation")
    )
    return train, test


def tune_learning_rate(family, make_optimizer, trials, steps, tasks, directory, seed=0):
    """KerasTuner Bayesian optimization of a learning rate in [1e-4, 1] (log scale).

    Args:
        family: The `TaskFamily` whose tasks score a trial.
        make_optimizer: `make_optimizer(learning_rate)` returns a new Keras optimizer.
        trials: The trial budget.
        steps: Steps of each training run.
        tasks: Tasks averaged by a trial (drawn with `seed`, the same for every trial).
        directory: KerasTuner's project directory (a rerun resumes it).
        seed: Seed of the tasks, the runs and the oracle.

    Returns:
        `(best learning rate, [trial scores in order])`; a score is the mean final
        training loss, 1e9 for a diverged run.
    """
    generator = np.random.default_rng(seed)
    pool = [family.task(generator) for _ in range(tasks)]

    class Search(keras_tuner.Tuner):
        def run_trial(self, trial):
            rate = trial.hyperparameters.Float("learning_rate", 1e-4, 1.0, sampling="log")
            finals = [
                family.training_curve(make_optimizer(rate), task, steps, seed + i, every=steps)[-1]
                for i, task in enumerate(pool)
            ]
            return float(np.mean(finals)) if np.all(np.isfinite(finals)) else 1e9

    search = Search(
        oracle=keras_tuner.oracles.BayesianOptimizationOracle(max_trials=trials, seed=seed),
        directory=directory,
        project_name="search",
    )
    search.search()
    trials_in_order = [search.oracle.trials[i] for i in search.oracle.start_order]
    best = search.get_best_hyperparameters(1)[0].get("learning_rate")
    return best, [trial.score for trial in trials_in_order]


def meta_train(
    rule,
    family,
    directory,
    meta_steps,
    truncation_length,
    meta_batch_size,
    estimator,
    learning_rate,
    seed,
    verbose=2,
    loss_floor=0.0,
):
    """Meta-trains `rule` on `family` with `OptimizerMetaLearner.fit`, resumable.

    Backups go to `directory/backup` (`tf_meta.backup.AtomicBackupAndRestore`): a rerun of a
    killed job continues from the last finished epoch.

    Returns:
        `(learner, seconds)`.
    """
    network = family.build_model()
    learner = optimizers.OptimizerMetaLearner(
        rule,
        network,
        family.loss,
        meta_batch_size,
        truncation_length,
        estimator,
        loss_floor=loss_floor,
        seed=seed,
    )
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0))
    epochs = 10 if meta_steps >= 10 else 1
    stream = family.stream(network, meta_batch_size, truncation_length, rule.training_steps, seed)
    start = time.time()
    learner.fit(
        stream,
        epochs=epochs,
        steps_per_epoch=max(meta_steps // epochs, 1),
        callbacks=[backup.AtomicBackupAndRestore(os.path.join(directory, "backup"))],
        verbose=verbose,
    )
    return learner, time.time() - start


def curves(family, make_optimizers, tasks, steps, seed, build_model=None):
    """Training curves of every optimizer on the same held-out tasks.

    Args:
        family: The held-out `TaskFamily`.
        make_optimizers: Name to a function returning a new Keras optimizer.
        tasks: How many tasks (drawn with `seed`).
        steps: Steps of each run.
        seed: Seed of the tasks, initializations and minibatches.
        build_model: Another network than the family's (the wide and deep one).

    Returns:
        Name to an array `[tasks, steps // EVERY + 1]` of training losses.
    """
    generator = np.random.default_rng(seed)
    pool = [family.task(generator) for _ in range(tasks)]
    return {
        name: np.stack(
            [
                family.training_curve(make(), task, steps, seed + i, EVERY, build_model)
                for i, task in enumerate(pool)
            ]
        )
        for name, make in make_optimizers.items()
    }


def summary(results, reference):
    """Per optimizer: final loss (mean, 95% interval), and steps to `reference`'s final loss.

    The steps to reach are counted per task (the first measurement at or below the
    reference's final loss on that task) and reported as the median over tasks, with the
    fraction of tasks that reach it at all.
    """
    target = results[reference][:, -1]
    rows = {}
    for name, losses in results.items():
        finals = losses[:, -1]
        mean, half_width = evaluation.confidence_interval(
            np.where(np.isfinite(finals), finals, 1e30)
        )
        reached = [
            int(np.argmax(curve <= goal)) * EVERY if np.any(curve <= goal) else None
            for curve, goal in zip(losses, target, strict=True)
        ]
        steps = [value for value in reached if value is not None]
        rows[name] = {
            "final_loss": mean,
            "half_width": half_width,
            "diverged": int(np.sum(~np.isfinite(finals))),
            "median_steps_to_reference": float(np.median(steps)) if steps else None,
            "reached_reference": len(steps) / len(reached),
        }
    return rows


def table(rows, steps, reference) -> str:
    """The summary as a Markdown table."""
    lines = [
        f"| optimizer | loss after {steps} steps (mean ± 95% interval) | diverged | median steps to"
        f" {reference}'s final loss (ratio) | tasks reaching it |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        median = row["median_steps_to_reference"]
        ratio = "never" if median is None else f"{median:.0f} ({median / steps:.2f}x)"
        lines.append(
            f"| {name} | {row['final_loss']:.3g} ± {row['half_width']:.2g} | {row['diverged']} | "
            f"{ratio} | {row['reached_reference']:.0%} |"
        )
    return "\n".join(lines)


def plot(results, path, title) -> None:
    """Mean training loss against steps, one line per optimizer, log scale."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, losses in results.items():
        finite = np.where(np.isfinite(losses), losses, np.nan)
        axis.plot(np.arange(losses.shape[1]) * EVERY, np.nanmean(finite, axis=0), label=name)
    axis.set_xlabel("training step")
    axis.set_ylabel("training loss (mean over held-out tasks)")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def schedule(family, rule, steps, seed):
    """The learning rate and momentum a meta-trained controller chooses on a held-out task.

    Returns:
        `(rates, momenta)`, each `[steps, variables]`.
    """
    task = family.task(np.random.default_rng(seed))
    model = family.build_model()
    optimizer = optimizers.HyperparameterController(rule=rule, training_steps=steps)
    model.compile(optimizer=optimizer, loss=family.loss)
    inputs, targets = family.batches(task, steps, np.random.default_rng(seed))
    rates, momenta = [], []
    for step in range(steps):
        model.train_on_batch(inputs[step], targets[step])
        values = list(optimizer.hyperparameters().values())
        rates.append([rate for rate, _ in values])
        momenta.append([momentum for _, momentum in values])
    return np.array(rates), np.array(momenta)


def plot_schedule(family, rule, steps, seed, path) -> None:
    """A PNG of the controller's learned schedule, one line per weight tensor."""
    rates, momenta = schedule(family, rule, steps, seed)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(rates)
    top.set_yscale("log")
    top.set_ylabel("learning rate")
    bottom.plot(momenta)
    bottom.set_ylabel("momentum")
    bottom.set_xlabel("training step")
    top.set_title(f"Learned schedule on a held-out task, {family.name}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def make_rule(name, rates, run_length, seed):
    """A new rule by flag name.

    `mlp` starts as Adam at tuned Adam's rate, `controller` as SGD with momentum 0.9 at
    tuned SGD's rate; `lstm` starts from random weights, as in Andrychowicz et al.
    """
    if name == "mlp":
        return optimizers.MLPRule(rates["adam"], run_length, seed=seed)
    if name == "controller":
        return optimizers.ControllerRule(rates["sgd"], run_length, seed=seed)
    if name == "lstm":
        return optimizers.LSTMRule(training_steps=run_length, seed=seed)
    raise ValueError(f"Unknown rule {name!r}: expected mlp, lstm or controller.")


def baselines(adam_rate, sgd_rate):
    """The tuned baselines, by name."""
    return {
        "Adam (tuned)": lambda: keras.optimizers.Adam(adam_rate),
        "SGD momentum (tuned)": lambda: keras.optimizers.SGD(sgd_rate, momentum=0.9),
    }


def learned(trained_rules, run_length):
    """The meta-trained rules as Keras optimizers for runs of `run_length` steps."""
    classes = {
        "mlp": optimizers.LearnedOptimizer,
        "lstm": optimizers.LSTMOptimizer,
        "controller": optimizers.HyperparameterController,
    }
    return {
        f"{classes[name].__name__} (meta-trained)": functools.partial(
            classes[name], rule=rule, training_steps=run_length
        )
        for name, rule in trained_rules.items()
    }


def tune_and_meta_train(train, directory):
    """Tunes both baselines on `train`, then meta-trains every rule of `--rules`.

    Reads the job's flags (the benchmark shares them). Tuning projects and meta-training
    backups go under `directory`, so a rerun resumes both.

    Returns:
        `(rates, trained, seconds)`: the tuned learning rates (`adam`, `sgd`), and by rule
        name the meta-trained rule and its meta-training time.
    """
    rates = {}
    for name, make in (
        ("adam", lambda rate: keras.optimizers.Adam(rate)),
        ("sgd", lambda rate: keras.optimizers.SGD(rate, momentum=0.9)),
    ):
        rates[name], _ = tune_learning_rate(
            train,
            make,
            FLAGS.tuning_trials,
            FLAGS.run_length,
            FLAGS.tuning_tasks,
            os.path.join(directory, f"tuning_{name}"),
            FLAGS.seed,
        )
    trained, seconds = {}, {}
    for name in FLAGS.rules:
        rule = make_rule(name, rates, FLAGS.run_length, FLAGS.seed)
        learner, seconds[name] = meta_train(
            rule,
            train,
            os.path.join(directory, f"meta_{name}"),
            FLAGS.meta_steps,
            FLAGS.truncation_length,
            FLAGS.meta_batch_size,
            FLAGS.estimator,
            FLAGS.meta_learning_rate,
            FLAGS.seed,
            FLAGS.verbose,
            FLAGS.loss_floor,
        )
        trained[name] = learner.rule
    return rates, trained, seconds


def main(argv):
    """Tunes, meta-trains, compares and writes the results."""
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    train, test = families(FLAGS.family, FLAGS.data_dir)
    steps = FLAGS.run_length
    rates, trained, seconds = tune_and_meta_train(train, FLAGS.output_dir)
    contenders = {**baselines(rates["adam"], rates["sgd"]), **learned(trained, steps)}
    results = curves(test, contenders, FLAGS.tasks, steps, FLAGS.seed + 1)
    rows = summary(results, "Adam (tuned)")
    report = (
        f"# Learned optimizers on {train.name}\n\n"
        f"Tuned learning rates: Adam {rates['adam']:.3g}, SGD momentum {rates['sgd']:.3g} "
        f"({FLAGS.tuning_trials} Bayesian trials each). Meta-training: "
        + ", ".join(f"{name} {seconds[name]:.0f} s" for name in seconds)
        + f" ({FLAGS.meta_steps} meta-steps).\n\n"
        + table(rows, steps, "Adam (tuned)")
        + "\n"
    )
    with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as file:
        file.write(report)
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as file:
        json.dump({"rates": rates, "meta_seconds": seconds, "rows": rows}, file, indent=1)
    plot(results, os.path.join(FLAGS.output_dir, "curves.png"), f"held-out tasks, {train.name}")
    if "controller" in trained:
        plot_schedule(
            test,
            trained["controller"],
            steps,
            FLAGS.seed + 1,
            os.path.join(FLAGS.output_dir, "controller_schedule.png"),
        )


def run():
    """The console script's entry point."""
    jobs.run(main, __name__)


if __name__ == "__main__":
    run()
