"""Meta-learned hyperparameter optimization: warm-started and zero-shot search on held-out tasks.

A family of small supervised tasks of varied kind and difficulty: sinusoid regression
(amplitude, input scale, frequency and noise drawn per task) and synthetic classification
(input width and scale, number of classes, a random teacher network and label noise drawn
per task). Every trial trains a small MLP on the task with the configuration (optimizer Adam,
SGD with momentum 0.9 or, with `--learned_rule`, tf_meta's `LearnedOptimizer` with a
meta-trained rule; learning rate, width, batch size) and scores it by the validation
loss divided by the loss of predicting the mean (regression) or the class frequencies
(classification), capped at 10 (a diverged run scores 10).

First a history: a random search on each training task, recorded in a `SearchHistory`.
Then, on held-out tasks, at equal trial budgets and over several seeds: random search,
cold-start Bayesian optimization (KerasTuner's), `TransferOracle` with meta-features, with a
`TaskEncoder` embedding meta-trained on the history, and `ConfigurationPredictor`'s
zero-shot configuration (its single trial). Best-so-far curves with 95% intervals as a PNG,
a table, and a JSON with every trial.

    python benchmarks/transfer_tuning.py                  # the full run (about an hour)
    python benchmarks/transfer_tuning.py --smoke          # checks the script in a minute
"""

import json
import math
import os
import pathlib
import tempfile
import time

import keras
import keras_tuner
import matplotlib
import numpy as np
from absl import app, flags

from tf_meta import optimizers, tuners
from tf_meta.backup import replace_atomically

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("history_tasks", 40, "Training tasks, each searched to build the history.")
flags.DEFINE_integer("history_trials", 16, "Random-search trials per training task.")
flags.DEFINE_integer("test_tasks", 8, "Held-out tasks.")
flags.DEFINE_integer("trials", 20, "Trials per search on a held-out task.")
flags.DEFINE_integer("seeds", 3, "Searches per method and held-out task.")
flags.DEFINE_integer("neighbours", 5, "Neighbours whose best configurations start a search.")
flags.DEFINE_integer("epochs", 4, "Training epochs of each trial.")
flags.DEFINE_string("output_dir", "benchmarks/results/transfer_tuning", "Where results go.")
flags.DEFINE_string("history_dir", None, "The history's directory (reused when it exists).")
flags.DEFINE_bool("smoke", False, "3 + 1 tasks, 3 trials, 1 seed: checks the script.")
flags.DEFINE_string(
    "learned_rule",
    None,
    "An `MLPRule`'s weights (`learned_optimizers.py` writes `mlp_rule.npz`): adds tf_meta's "
    "LearnedOptimizer with that rule to the optimizer choice, its base step size being the "
    "searched learning rate.",
)

METHODS = ("random", "bayesian", "transfer_meta_features", "transfer_embedding", "zero_shot")
_EXAMPLES = 400


def _seed(index: int) -> int:
    """A KerasTuner seed, far from the others.

    KerasTuner's searches with seeds s and s + 1 sample the same configurations, one
    hyperparameter apart, so searches meant to differ need seeds far apart.
    """
    return 7919 * index + 1


def make_task(seed: int) -> dict:
    """A task of the family: arrays, its kind and its generating parameters."""
    rng = np.random.default_rng(seed)
    scale = float(np.exp(rng.uniform(np.log(0.05), np.log(20))))
    if seed % 2 == 0:
        amplitude = float(np.exp(rng.uniform(np.log(0.1), np.log(10))))
        frequency = float(rng.uniform(0.5, 2.0))
        noise = float(rng.uniform(0.0, 0.3))
        x = rng.uniform(-5, 5, (2 * _EXAMPLES, 1))
        y = amplitude * (
            np.sin(frequency * x + rng.uniform(0, np.pi)) + noise * rng.normal(size=x.shape)
        )
        x = scale * x
        information = dict(
            kind="regression", scale=scale, amplitude=amplitude, frequency=frequency, noise=noise
        )
        y = y.astype(np.float32)
    else:
        width = int(rng.integers(2, 33))
        classes = int(rng.integers(2, 9))
        label_noise = float(rng.uniform(0.0, 0.2))
        x = rng.normal(size=(2 * _EXAMPLES, width))
        hidden = np.tanh(x @ rng.normal(size=(width, 16)) / math.sqrt(width) * 2)
        y = np.argmax(hidden @ rng.normal(size=(16, classes)), axis=1)
        flip = rng.random(len(y)) < label_noise
        y = np.where(flip, rng.integers(0, classes, len(y)), y).astype(np.int32)
        x = scale * x
        information = dict(
            kind="classification",
            scale=scale,
            width=width,
            classes=classes,
            label_noise=label_noise,
        )
    x = x.astype(np.float32)
    return dict(
        x=x[:_EXAMPLES],
        y=y[:_EXAMPLES],
        validation_x=x[_EXAMPLES:],
        validation_y=y[_EXAMPLES:],
        information=information,
    )


def space() -> keras_tuner.HyperParameters:
    """The searched configuration."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["adam", "sgd"] + ["learned"] * bool(FLAGS.learned_rule))
    hp.Float("learning_rate", 1e-4, 3.0, sampling="log")
    hp.Choice("units", [16, 64, 256])
    hp.Choice("batch_size", [16, 64])
    return hp


class TaskTuner(keras_tuner.Tuner):
    """Trains the family's MLP on one task; the score is its normalized validation loss."""

    def __init__(self, oracle, task, **kwargs):
        super().__init__(oracle, **kwargs)
        self.task = task

    def run_trial(self, trial, *args, **kwargs):
        """Trains one configuration; returns its capped normalized validation loss."""
        hp = trial.hyperparameters
        task = self.task
        classification = task["information"]["kind"] == "classification"
        keras.utils.set_random_seed(0)
        outputs = task["information"]["classes"] if classification else 1
        model = keras.Sequential(
            [
                keras.Input(task["x"].shape[1:]),
                keras.layers.Dense(hp["units"], activation="relu"),
                keras.layers.Dense(hp["units"], activation="relu"),
                keras.layers.Dense(outputs),
            ]
        )
        if hp["optimizer"] == "learned":
            steps = FLAGS.epochs * math.ceil(len(task["x"]) / hp["batch_size"])
            optimizer = optimizers.LearnedOptimizer(
                optimizers.MLPRule(training_steps=steps),
                learning_rate=hp["learning_rate"],
                rule_weights=_learned_rule_weights(),
            )
        elif hp["optimizer"] == "adam":
            optimizer = keras.optimizers.Adam(hp["learning_rate"])
        else:
            optimizer = keras.optimizers.SGD(hp["learning_rate"], momentum=0.9)
        loss = (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if classification
            else "mse"
        )
        model.compile(optimizer=optimizer, loss=loss)
        model.fit(task["x"], task["y"], batch_size=hp["batch_size"], epochs=FLAGS.epochs, verbose=0)
        validation_loss = model.evaluate(
            task["validation_x"], task["validation_y"], batch_size=400, verbose=0
        )
        if classification:
            frequencies = np.bincount(task["y"], minlength=outputs) / len(task["y"])
            baseline = -np.mean(np.log(np.maximum(frequencies[task["validation_y"]], 1e-6)))
        else:
            baseline = np.mean((task["validation_y"] - task["y"].mean()) ** 2)
        score = validation_loss / baseline
        return float(min(score, 10.0)) if math.isfinite(score) else 10.0


def _learned_rule_weights() -> list[np.ndarray]:
    """The weights of `--learned_rule`'s `MLPRule`."""
    with np.load(FLAGS.learned_rule) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def search(oracle, task, directory) -> list[float]:
    """Runs a search; returns its scores in trial order."""
    tuner = TaskTuner(oracle, task, directory=directory, project_name="search", overwrite=True)
    tuner.search(verbose=0)
    return [oracle.trials[trial_id].score for trial_id in oracle.start_order]


def build_history(directory: str) -> tuple[list[dict], float]:
    """Random searches on the training tasks, recorded; complete records are reused.

    Returns:
        The history's records sorted by name, and the seconds spent building missing ones.
    """
    history = tuners.SearchHistory(directory)
    records = {record["name"]: record for record in history.records()}
    seconds = 0.0
    progress = keras.utils.Progbar(FLAGS.history_tasks, unit_name="task")
    for index in range(FLAGS.history_tasks):
        name = f"task-{index:03d}"
        if name not in records:
            started = time.time()
            task = make_task(1000 + index)
            oracle = keras_tuner.oracles.RandomSearchOracle(
                max_trials=FLAGS.history_trials, seed=_seed(index), hyperparameters=space()
            )
            with tempfile.TemporaryDirectory() as scratch:
                search(oracle, task, scratch)
            records[name] = history.add(
                name, oracle, task["x"], task["y"], information=task["information"]
            )
            seconds += time.time() - started
        progress.update(index + 1)
    return [records[name] for name in sorted(records)], seconds


def oracle_for(method, seed, task, records, encoder, predictor):
    """The method's oracle for one search."""
    common = dict(max_trials=FLAGS.trials, seed=_seed(seed), hyperparameters=space())
    if method == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if method == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(**common)
    return tuners.TransferOracle(
        records,
        task["x"],
        task["y"],
        neighbours=FLAGS.neighbours,
        encoder=encoder if method == "transfer_embedding" else None,
        **common,
    )


def interval(values):
    """Mean and 95% normal half-width over the first axis (0 for a single value)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return values.mean(axis=0), np.zeros_like(values.mean(axis=0))
    return values.mean(axis=0), 1.96 * values.std(axis=0, ddof=1) / math.sqrt(len(values))


def main(_):
    if FLAGS.smoke:
        FLAGS.history_tasks, FLAGS.history_trials, FLAGS.test_tasks = 3, 3, 1
        FLAGS.trials, FLAGS.seeds, FLAGS.neighbours, FLAGS.epochs = 3, 1, 2, 1
    if FLAGS.learned_rule and not os.path.isfile(FLAGS.learned_rule):
        raise ValueError(f"`--learned_rule` {FLAGS.learned_rule!r} is not a file.")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    history_dir = FLAGS.history_dir or os.path.join(FLAGS.output_dir, "history")
    records, history_seconds = build_history(history_dir)
    timing_path = os.path.join(FLAGS.output_dir, "history_seconds.json")
    if os.path.exists(timing_path):  # the history, or part of it, was built by an earlier run
        with open(timing_path) as file:
            history_seconds += json.load(file)["seconds"]
    with open(timing_path, "w") as file:
        json.dump({"seconds": history_seconds}, file)
    encoder = tuners.TaskEncoder()
    encoder.fit_history(
        records, hyperparameters=space(), steps=5 if FLAGS.smoke else 400, verbose=0
    )
    predictor = tuners.ConfigurationPredictor(space())
    predictor.fit(records, epochs=5 if FLAGS.smoke else 100, verbose=0)
    results_path = os.path.join(FLAGS.output_dir, "searches.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as file:
            results = json.load(file)
    progress = keras.utils.Progbar(FLAGS.test_tasks * FLAGS.seeds, unit_name="search")
    for task_index in range(FLAGS.test_tasks):
        task = make_task(task_index)
        for seed in range(1, FLAGS.seeds + 1):
            key = f"task-{task_index}-seed-{seed}"
            if key not in results:
                entry = {"information": task["information"]}
                for method in METHODS:
                    with tempfile.TemporaryDirectory() as scratch:
                        if method == "zero_shot":  # the predictor's configuration alone
                            oracle = tuners.TransferOracle(
                                records,
                                task["x"],
                                task["y"],
                                max_trials=1,
                                predictor=predictor,
                                hyperparameters=space(),
                                seed=seed,
                            )
                        else:
                            oracle = oracle_for(method, seed, task, records, encoder, predictor)
                        entry[method] = search(oracle, task, scratch)
                        if method == "zero_shot":
                            entry["zero_shot_values"] = oracle.warm_start[0]
                results[key] = entry
                text = json.dumps(results)
                replace_atomically(
                    results_path, lambda path, text=text: pathlib.Path(path).write_text(text)
                )
            progress.add(1)
    report(results, history_seconds, records)


def _optimizer_counts(configurations) -> str:
    """How many of `configurations` (hyperparameter values) use each optimizer."""
    names = [values["optimizer"] for values in configurations]
    return ", ".join(f"{name} {names.count(name)}" for name in sorted(set(names)))


def report(results, history_seconds, records):
    """The table and the PNG."""
    history_size = len(records)
    searches = list(results.values())
    curves = {
        method: np.array([np.minimum.accumulate(entry[method]) for entry in searches])
        for method in METHODS
        if method != "zero_shot"
    }
    bayesian_final = curves["bayesian"][:, -1]
    random_median = np.array(
        [np.median(entry["random"]) for entry in searches]
    )  # the median random configuration of each search
    lines = [
        f"History: {history_size} tasks x {FLAGS.history_trials} random trials "
        f"(built in {history_seconds:.0f} s). Held-out: {FLAGS.test_tasks} tasks x "
        f"{FLAGS.seeds} seeds, {FLAGS.trials} trials each. Score: normalized validation loss "
        "(lower is better; mean and 95% interval over searches).",
        "",
        "| method | best after 1 | after 5 | after 10 | after 20 | trials to reach BO's 20-trial "
        "best (median) | trials to within 2% of it (median) | best after 5 / BO's after 20 "
        "(median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, curve in curves.items():
        cells = []
        for trials in (1, 5, 10, 20):
            if trials <= curve.shape[1]:
                mean, half = interval(curve[:, trials - 1])
                cells.append(f"{mean:.3f} ± {half:.3f}")
            else:
                cells.append("")
        reached = [
            [
                int(np.argmax(row <= target * tolerance)) + 1
                if np.any(row <= target * tolerance)
                else math.inf
                for row, target in zip(curve, bayesian_final, strict=True)
            ]
            for tolerance in (1.0, 1.02)
        ]
        ratio = np.median(curve[:, min(5, curve.shape[1]) - 1] / bayesian_final)
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {np.median(reached[0])} | {np.median(reached[1])} | {ratio:.3f} |"
        )
    zero_shot = np.array([entry["zero_shot"][0] for entry in searches])
    mean, half = interval(zero_shot)
    beats = float(np.mean(zero_shot < random_median))
    random_mean, random_half = interval(random_median)
    lines.append(
        f"| zero_shot (one trial) | {mean:.3f} ± {half:.3f} | | | | beats the median random "
        f"configuration in {beats:.0%} of searches | | |"
    )
    lines.append(
        f"| median random configuration | {random_mean:.3f} ± {random_half:.3f} | | | | | | |"
    )
    best_of_tasks = [
        min(record["trials"], key=lambda trial: trial["score"])["values"] for record in records
    ]
    lines += [
        "",
        f"Optimizer of the best configuration of each recorded task: "
        f"{_optimizer_counts(best_of_tasks)}; of the zero-shot predictions: "
        f"{_optimizer_counts([entry['zero_shot_values'] for entry in searches])}.",
    ]
    table = "\n".join(lines)
    with open(os.path.join(FLAGS.output_dir, "table.md"), "w") as file:
        file.write(table + "\n")
    figure, (absolute, relative) = plt.subplots(1, 2, figsize=(11, 4))
    for method, curve in curves.items():
        steps = np.arange(1, curve.shape[1] + 1)
        means, halves = interval(curve)
        absolute.plot(steps, means, label=method)
        absolute.fill_between(steps, means - halves, means + halves, alpha=0.15)
        # Each search against its task's cold-start Bayesian result: the task-to-task spread
        # that dominates the left panel's intervals cancels.
        ratios = curve / bayesian_final[:, None]
        relative.plot(steps, np.median(ratios, axis=0), label=method)
        relative.fill_between(steps, *np.percentile(ratios, [25, 75], axis=0), alpha=0.15)
    absolute.axhline(zero_shot.mean(), color="black", linestyle="--", label="zero-shot (1 trial)")
    relative.axhline(
        np.median(zero_shot / bayesian_final), color="black", linestyle="--", label="zero-shot"
    )
    relative.axhline(1.02, color="gray", linestyle=":", label="2% above BO's 20-trial best")
    absolute.set(
        xlabel="trials",
        ylabel="best normalized validation loss",
        title="Best so far (mean, 95% interval over searches)",
    )
    relative.set(
        xlabel="trials",
        ylabel="best so far / cold-start BO's best after 20",
        title="Against cold-start BO (median, quartiles)",
        ylim=(0.9, 1.6),
    )
    absolute.legend(fontsize=8)
    relative.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(FLAGS.output_dir, "best_so_far.png"), dpi=120)
    plt.close(figure)
    print(table)


if __name__ == "__main__":
    app.run(main)
