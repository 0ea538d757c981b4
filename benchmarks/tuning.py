"""Hyperparameter search over meta-learners: random, Bayesian, Hyperband, evolution, REINFORCE.

Two problems: MAML on sinusoid regression (inner learning rate, inner steps and meta learning
rate; objective post-adaptation validation MSE) and MAML on Omniglot 5-way 1-shot (inner
learning rate, inner steps and the number of convolution blocks; objective post-adaptation
validation accuracy),
each trial with a small training budget. Every tuner gets the same trial budget and seeds.
The table reports, averaged over seeds, the best validation score found, the test score of
that configuration's model on held-out tasks, and the trials needed to come within 1% of the
final best; a PNG plots the mean best-so-far against trials.

    TF_META_DATA_DIR=../shared/data python benchmarks/tuning.py
"""

import os
import tempfile
import time

import keras
import keras_tuner
import matplotlib
import numpy as np
from absl import app, flags

import tf_meta
from tf_meta import tuners

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("trials", 12, "Trials per search.")
flags.DEFINE_integer("seeds", 3, "Searches per tuner and problem.")
flags.DEFINE_list("problems", ["sinusoid", "omniglot"], "Problems to search.")
flags.DEFINE_list(
    "tuners", ["random", "bayesian", "hyperband", "evolution", "reinforce"], "Tuners to compare."
)
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_string("output_dir", "benchmarks/results", "Where the PNG plots are written.")
flags.DEFINE_bool("smoke", False, "Sinusoid, 2 trials of 2 steps per tuner: checks the script.")


def _sinusoid():
    def build(hp):
        # The same initial weights for every trial: the objective is then a function of the
        # hyperparameters alone, up to the nondeterminism of threaded kernels.
        keras.utils.set_random_seed(0)
        learner = tf_meta.MAML(
            tf_meta.models.mlp(),
            inner_learning_rate=hp.Float("inner_learning_rate", 1e-4, 1.0, sampling="log"),
            inner_steps=hp.Int("inner_steps", 1, 5),
        )
        learning_rate = hp.Float("learning_rate", 1e-5, 1e-1, sampling="log")
        learner.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
        return learner

    return {
        "build": build,
        "objective": keras_tuner.Objective("val_loss", "min"),
        "train": tf_meta.data.sinusoid(meta_batch_size=25, seed=0),
        "validation": tf_meta.data.sinusoid(meta_batch_size=100, seed=1, num_tasks=100),
        "test": tf_meta.data.sinusoid(meta_batch_size=100, seed=2, num_tasks=600),
        "steps_per_epoch": 100,
        "epochs": 2,
        "metric": "loss",
    }


def _omniglot():
    train_images = tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir)
    validation_images = tf_meta.data.load_omniglot("vinyals_val", data_dir=FLAGS.data_dir)
    test_images = tf_meta.data.load_omniglot("vinyals_test", data_dir=FLAGS.data_dir)

    def build(hp):
        layers = [keras.Input((28, 28, 1))]
        for _ in range(hp.Int("blocks", 1, 4)):
            layers += [
                keras.layers.Conv2D(32, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(2),
            ]
        layers += [keras.layers.Flatten(), keras.layers.Dense(5)]
        learner = tf_meta.MAML(
            keras.Sequential(layers),
            inner_learning_rate=hp.Float("inner_learning_rate", 1e-3, 1.0, sampling="log"),
            inner_steps=hp.Int("inner_steps", 1, 3),
            first_order=True,
        )
        learner.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return learner

    def pool(collection, seed, tasks):
        return tf_meta.data.episodes(collection, 5, 1, 5, 50, seed=seed, num_tasks=tasks)

    return {
        "build": build,
        "objective": keras_tuner.Objective("val_accuracy", "max"),
        "train": tf_meta.data.episodes(train_images, 5, 1, 5, 8, seed=0),
        "validation": pool(validation_images, 1, 100),
        "test": pool(test_images, 2, 300),
        "steps_per_epoch": 40,
        "epochs": 2,
        "metric": "accuracy",
    }


def _tuner(name, problem, seed, directory):
    common = {
        "objective": problem["objective"],
        "seed": seed,
        "directory": directory,
        "project_name": f"{name}_{seed}",
        "overwrite": True,
        # A diverged trial (NaN objective) fails; the search goes on.
        "max_consecutive_failed_trials": FLAGS.trials,
    }
    trials = FLAGS.trials
    if name == "random":
        return keras_tuner.RandomSearch(problem["build"], max_trials=trials, **common)
    if name == "bayesian":
        return keras_tuner.BayesianOptimization(
            problem["build"], max_trials=trials, num_initial_points=3, **common
        )
    if name == "hyperband":
        # Brackets over 1..epochs epochs; iterations are added until the trial count matches.
        return keras_tuner.Hyperband(
            problem["build"],
            max_epochs=problem["epochs"],
            factor=2,
            hyperband_iterations=max(1, trials // 3),
            **common,
        )
    if name == "evolution":
        return tuners.Evolution(
            problem["build"], max_trials=trials, population_size=4, tournament_size=2, **common
        )
    return tuners.Reinforce(problem["build"], max_trials=trials, **common)


def _search(name, problem, seed, directory):
    keras.utils.set_random_seed(seed)
    tuner = _tuner(name, problem, seed, directory)
    tuner.search(
        problem["train"],
        validation_data=problem["validation"],
        epochs=problem["epochs"],
        steps_per_epoch=problem["steps_per_epoch"],
        verbose=0,
    )
    oracle = tuner.oracle
    scores = [
        oracle.trials[i].score
        for i in oracle.start_order[: FLAGS.trials]
        if oracle.trials[i].score is not None
    ]
    best_model = tuner.get_best_models(1)[0]
    test = best_model.evaluate(problem["test"], verbose=0, return_dict=True)[problem["metric"]]
    return scores, test


def _best_so_far(scores, direction):
    reduce = np.fmin if direction == "min" else np.fmax  # a diverged (NaN) trial never wins
    return reduce.accumulate(np.asarray(scores, dtype=float))


def _trials_to_within(scores, direction, tolerance=0.01):
    curve = _best_so_far(scores, direction)
    final = curve[-1]
    bound = final * (1 + tolerance) if direction == "min" else final * (1 - tolerance)
    close = curve <= bound if direction == "min" else curve >= bound
    return int(np.argmax(close)) + 1


def main(argv):
    """Runs every tuner on every problem and prints the table."""
    del argv
    if FLAGS.smoke:
        FLAGS.trials, FLAGS.seeds, FLAGS.problems = 2, 1, ["sinusoid"]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    for problem_name in FLAGS.problems:
        problem = _sinusoid() if problem_name == "sinusoid" else _omniglot()
        if FLAGS.smoke:
            problem["steps_per_epoch"] = 2
        direction = problem["objective"].direction
        rows, curves = [], {}
        for name in FLAGS.tuners:
            start = time.time()
            results = []
            with tempfile.TemporaryDirectory() as directory:
                for seed in range(1, FLAGS.seeds + 1):
                    scores, test = _search(name, problem, seed, directory)
                    results.append((scores, test))
                    print(  # noqa: T201 (per-seed rows, printed as the searches finish)
                        f"{problem_name} {name} seed {seed}: {len(scores)} trials, best "
                        f"{_best_so_far(scores, direction)[-1]:.4f}, test {test:.4f}, within 1% "
                        f"after {_trials_to_within(scores, direction)} trials",
                        flush=True,
                    )
            best = [_best_so_far(scores, direction)[-1] for scores, _ in results]
            within = [_trials_to_within(scores, direction) for scores, _ in results]
            length = min(len(scores) for scores, _ in results)
            curves[name] = np.mean(
                [_best_so_far(scores, direction)[:length] for scores, _ in results], axis=0
            )
            rows.append(
                f"| {name} | {np.mean([len(s) for s, _ in results]):.1f} | "
                f"{np.mean(best):.4f} ± {np.std(best):.4f} | "
                f"{np.mean([t for _, t in results]):.4f} | {np.mean(within):.1f} | "
                f"{time.time() - start:.0f} |"
            )
        objective = problem["objective"].name
        print(  # noqa: T201 (a benchmark script's report)
            f"\n{problem_name}: objective {objective} ({direction}), {FLAGS.seeds} seeds\n\n"
            f"| tuner | trials | best {objective} (mean ± sd over seeds) | test {problem['metric']}"
            " of best | trials to within 1% of final best | seconds |\n"
            "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows)
        )
        figure, axis = plt.subplots(figsize=(6, 4))
        for name, curve in curves.items():
            axis.plot(np.arange(1, len(curve) + 1), curve, marker="o", label=name)
        axis.set_xlabel("trial")
        axis.set_ylabel(f"best {objective} so far (mean over seeds)")
        axis.set_title(f"Tuning MAML on {problem_name}")
        if direction == "min":
            axis.set_yscale("log")
        axis.legend()
        figure.tight_layout()
        figure.savefig(os.path.join(FLAGS.output_dir, f"tuning_{problem_name}.png"), dpi=100)
        plt.close(figure)


if __name__ == "__main__":
    app.run(main)
