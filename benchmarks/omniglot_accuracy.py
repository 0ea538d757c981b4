"""Omniglot few-shot accuracy of one learner within a wall-clock training budget.

Trains a learner on Omniglot (`vinyals_trainval`: 1200 characters, each rotated into 4
classes) with Keras's `fit`, and every `--eval_every` meta-steps scores a fixed pool of
`--curve_tasks` test episodes (`vinyals_test`, 423 characters x 4 rotations) for the curve of
test accuracy against meta-steps. Training stops after the meta-step that spends
`--budget_minutes` minutes of training (evaluation time is not counted). The final model is
then scored on `--test_tasks` other test episodes, reported as the mean and its 95%
confidence interval. No model selection is done on the test episodes.

`--recipe=paper` uses the paper's full recipe; `--recipe=cpu` (the default) keeps the
paper's hyperparameters but notes the budget. The recipes (per learner):

- protonet (Snell et al. 2017): training episodes of 60 ways, `--shots` shots and 5 queries,
  one episode per step, Adam 1e-3 halved every 2000 episodes; the paper trains until the
  validation loss stops improving.
- maml / fomaml (Finn et al. 2017, section 5.2): `--ways`-way `--shots`-shot tasks with as
  many queries as shots, meta-batch 32 (16 for 20-way), inner learning rate 0.4, 1 inner
  step (5 for 20-way), 3 at test time, Adam 1e-3; the paper trains 60,000 meta-steps.
- metasgd (Li et al. 2017): as MAML, with learned per-weight inner learning rates.
- anil (Raghu et al. 2020): as MAML, adapting the head only.
- imaml (Rajeswaran et al. 2019, Table 2, "iMAML, GD"): as MAML's tasks and meta-batch,
  16 inner steps of gradient descent on the proximal support loss (25 for 20-way), the same
  at test time, regularization 2.0 and 5 conjugate-gradient steps, Adam 1e-3. The paper's
  table does not state the inner step size; 0.05 here is tf_meta's: at 0.1 gradient descent
  on conv4's proximal problem diverges (the implicit gradient's cosine with the exact one
  through 60 unrolled steps is 0.07 at 0.1 and 0.95 at 0.05; RESULTS.md).
- reptile (Nichol et al. 2018): 10-shot training tasks, 5 inner Adam steps (1e-3) on the
  whole support set (the paper's inner batches of 10 do not fit 1-shot test tasks),
  meta step size 1 annealed linearly to 0 (Keras's SGD with a polynomial decay) over the
  paper's 100,000 meta-steps, or over `--reptile_anneal_steps` with `--recipe=cpu`; meta-batch
  5, 50 test-time steps.

`--zeroing_trick` keeps the head of MAML, first-order MAML, Meta-SGD or ANIL at zero (Kao et
al. 2022), which is not part of the papers' recipes. `--inner_loss_steps=K` adds to each point
of the curve the support loss after 0 ... K inner steps, to see what the inner loop does.

Writes `<output_dir>/omniglot_<learner>_<ways>w<shots>s.json` and `.png` (the curve).

    TF_META_DATA_DIR=../shared/data python benchmarks/omniglot_accuracy.py --learner=protonet
"""

import json
import os
import time

import keras
import matplotlib
import tensorflow as tf
from absl import app, flags

import tf_meta

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
LEARNERS = ("protonet", "maml", "fomaml", "metasgd", "anil", "reptile", "imaml")
flags.DEFINE_enum("learner", "protonet", LEARNERS, "The meta-learner.")
flags.DEFINE_integer("ways", 5, "Classes per test episode.")
flags.DEFINE_integer("shots", 1, "Support examples per class.")
flags.DEFINE_enum("recipe", "cpu", ["cpu", "paper"], "`paper`: the paper's meta-steps.")
flags.DEFINE_float("budget_minutes", 60.0, "Training wall-clock budget (recipe=cpu).")
flags.DEFINE_integer("eval_every", 500, "Meta-steps between points of the curve.")
flags.DEFINE_integer("curve_tasks", 200, "Test episodes per point of the curve.")
flags.DEFINE_integer("test_tasks", 600, "Test episodes of the final score.")
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy of training."
)
flags.DEFINE_integer(
    "reptile_anneal_steps",
    4_000,
    "recipe=cpu: meta-steps over which Reptile's meta step size falls to 0 (one core trains "
    "about 4,400 in an hour).",
)
flags.DEFINE_float(
    "meta_learning_rate",
    None,
    "Adam's learning rate for MAML, first-order MAML, Meta-SGD and ANIL (default: the "
    "papers' 1e-3); a set value is named in the output files.",
)
flags.DEFINE_bool(
    "zeroing_trick",
    False,
    "Keep the classifier head at zero (Kao et al. 2022) for MAML, first-order MAML, Meta-SGD "
    "and ANIL; named in the output files.",
)
flags.DEFINE_integer(
    "inner_loss_steps",
    0,
    "If positive, each point of the curve also records the mean support loss after 0 ... this "
    "many inner steps on the pool's first 50 tasks (`tf_meta.callbacks.InnerLossCurve`).",
)
flags.DEFINE_integer("seed", 0, "Seed of the weights and the training episodes.")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_string("output_dir", "benchmarks/results", "Where the JSON and PNG are written.")
flags.DEFINE_bool("smoke", False, "A few meta-steps and tasks, to check the script runs.")

PUBLISHED = {  # (paper, {(ways, shots): accuracy in %})
    "protonet": ("Snell et al. 2017", {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}),
    "maml": ("Finn et al. 2017", {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9}),
    "fomaml": ("Finn et al. 2017", {(5, 1): 98.3, (5, 5): 99.2, (20, 1): 89.4, (20, 5): 97.9}),
    "metasgd": ("Li et al. 2017", {(5, 1): 99.53, (5, 5): 99.93, (20, 1): 95.93, (20, 5): 98.97}),
    "anil": ("Raghu et al. 2020", {(20, 1): 96.2, (20, 5): 98.0}),  # Table 2: 20-way only
    "imaml": (
        "Rajeswaran et al. 2019 (GD)",
        {(5, 1): 99.16, (5, 5): 99.67, (20, 1): 94.46, (20, 5): 98.69},
    ),
    "reptile": (
        "Nichol et al. 2018",
        {(5, 1): 97.68, (5, 5): 99.48, (20, 1): 89.43, (20, 5): 97.12},
    ),
}
PAPER_STEPS = {
    "protonet": 20_000,
    "maml": 60_000,
    "fomaml": 60_000,
    "metasgd": 60_000,
    "anil": 60_000,
    "reptile": 100_000,
    "imaml": 60_000,
}


def _recipe():
    """The learner, its training episodes' shape, meta-batch and optimizer."""
    name, ways, shots = FLAGS.learner, FLAGS.ways, FLAGS.shots
    if name == "protonet":
        learner = tf_meta.PrototypicalNetwork(tf_meta.models.conv4(ways=None))
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 2000, 0.5, staircase=True)
        return learner, (60, shots, 5), 1, keras.optimizers.Adam(schedule)
    if name == "reptile":
        learner = tf_meta.Reptile(
            tf_meta.models.conv4(ways=ways),
            inner_learning_rate=1e-3,
            inner_steps=5,
            eval_inner_steps=50,
        )
        total = PAPER_STEPS["reptile"] if FLAGS.recipe == "paper" else FLAGS.reptile_anneal_steps
        schedule = keras.optimizers.schedules.PolynomialDecay(1.0, total, 0.0)
        return learner, (ways, 10, 10), 5, keras.optimizers.SGD(schedule)
    inner = {  # Finn et al. 2017, section 5.2: 0.4 and 1 step at 5 ways, 0.1 and 5 at 20
        "inner_learning_rate": 0.4 if ways == 5 else 0.1,
        "inner_steps": 1 if ways == 5 else 5,
        "eval_inner_steps": 3 if ways == 5 else 5,
        "zeroing_trick": FLAGS.zeroing_trick,  # Kao et al. 2022; off in the papers' recipes
    }
    network = tf_meta.models.conv4(ways=ways)
    if name == "imaml":
        steps = 16 if ways == 5 else 25
        learner = tf_meta.IMAML(
            network,
            inner_learning_rate=0.05,
            inner_steps=steps,
            regularization=2.0,
            conjugate_gradient_steps=5,
        )
        optimizer = keras.optimizers.Adam(FLAGS.meta_learning_rate or 1e-3)
        return learner, (ways, shots, shots), 32 if ways == 5 else 16, optimizer
    if name in ("maml", "fomaml"):
        learner = tf_meta.MAML(network, first_order=name == "fomaml", **inner)
    elif name == "metasgd":
        learner = tf_meta.MetaSGD(network, **inner)
    else:
        learner = tf_meta.ANIL(network, **inner)
    optimizer = keras.optimizers.Adam(FLAGS.meta_learning_rate or 1e-3)
    return learner, (ways, shots, shots), 32 if ways == 5 else 16, optimizer


class _Curve(keras.callbacks.Callback):
    """Stops when the training budget is spent and scores the test pool at each epoch's end."""

    def __init__(self, pool, budget_seconds, inner_loss_steps):
        super().__init__()
        self.pool, self.budget_seconds = pool, budget_seconds
        self.inner_loss_steps = inner_loss_steps
        self.training_seconds, self.points = 0.0, []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.training_seconds + time.perf_counter() - self.started >= self.budget_seconds:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.training_seconds += time.perf_counter() - self.started
        scores = tf_meta.evaluation.task_scores(
            self.model, self.pool, keras.metrics.sparse_categorical_accuracy
        )
        step = int(self.model.optimizer.iterations.numpy())
        steps = range(self.inner_loss_steps + 1) if self.inner_loss_steps else []
        inner_losses = [logs[f"inner_loss_step_{k}"] for k in steps]
        point = (step, self.training_seconds, 100 * float(scores.mean()), inner_losses)
        self.points.append(point)
        logs["test_accuracy"] = point[2]


def _pool(images, seed, tasks):
    return tf_meta.data.episodes(
        images, FLAGS.ways, FLAGS.shots, 15, meta_batch_size=50, seed=seed, num_tasks=tasks
    )


def plot(report, curve_tasks, path):
    """Writes the PNG of a report's curve of test accuracy against meta-steps.

    Args:
        report: The report written as JSON (its `curve`, `published` and `paper`).
        curve_tasks: Test episodes per point of the curve.
        path: The PNG's path.
    """
    figure, axes = plt.subplots(figsize=(6, 4))
    points = report["curve"]
    axes.plot(
        [point["meta_step"] for point in points],
        [point["accuracy"] for point in points],
        marker="o",
        label="tf_meta",
    )
    if report["published"] is not None:
        axes.axhline(report["published"], color="gray", linestyle="--", label=report["paper"])
    axes.set_xlabel("meta-steps")
    axes.set_ylabel(f"test accuracy, {curve_tasks} tasks (%)")
    learner = report["learner"] + (", zeroing trick" if report.get("zeroing_trick") else "")
    axes.set_title(
        f"{learner}, Omniglot {report['ways']}-way {report['shots']}-shot:\n"
        f"{report['test_accuracy']:.1f} ± {report['confidence_95']:.1f}% after "
        f"{report['training_minutes']} min"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    """Trains, scores and writes the JSON report and the PNG curve."""
    del argv
    for flag in ("meta_learning_rate", "zeroing_trick"):
        excluded = ("protonet", "reptile") + (("imaml",) if flag == "zeroing_trick" else ())
        if FLAGS[flag].value not in (None, False) and FLAGS.learner in excluded:
            raise app.UsageError(f"--{flag} does not apply to {FLAGS.learner}")
    if FLAGS.inner_loss_steps and FLAGS.learner == "protonet":
        raise app.UsageError("--inner_loss_steps does not apply to protonet (no inner loop)")
    keras.utils.set_random_seed(FLAGS.seed)
    keras.config.set_dtype_policy(FLAGS.precision)
    train_images = tf_meta.data.load_omniglot("vinyals_trainval", data_dir=FLAGS.data_dir)
    test_images = tf_meta.data.load_omniglot("vinyals_test", data_dir=FLAGS.data_dir)
    learner, (train_ways, train_shots, train_queries), meta_batch_size, optimizer = _recipe()
    learner.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if FLAGS.smoke:
        eval_every, curve_tasks, test_tasks, budget, epochs = 2, 10, 20, float("inf"), 2
    else:
        eval_every, curve_tasks, test_tasks = FLAGS.eval_every, FLAGS.curve_tasks, FLAGS.test_tasks
        paper = FLAGS.recipe == "paper"
        budget = float("inf") if paper else 60 * FLAGS.budget_minutes
        epochs = -(-PAPER_STEPS[FLAGS.learner] // eval_every) if paper else 10**6
    curve = _Curve(_pool(test_images, 1, curve_tasks), budget, FLAGS.inner_loss_steps)
    train = tf_meta.data.episodes(
        train_images,
        train_ways,
        train_shots,
        train_queries,
        meta_batch_size=meta_batch_size,
        seed=FLAGS.seed,
    )
    callbacks = [curve]
    if FLAGS.inner_loss_steps:  # before `curve`, which reads the losses from the logs
        first_batch = next(iter(curve.pool))
        callbacks.insert(0, tf_meta.callbacks.InnerLossCurve(first_batch, FLAGS.inner_loss_steps))
    learner.fit(train, epochs=epochs, steps_per_epoch=eval_every, callbacks=callbacks, verbose=2)
    scores = tf_meta.evaluation.task_scores(
        learner, _pool(test_images, 2, test_tasks), keras.metrics.sparse_categorical_accuracy
    )
    mean, half_width = tf_meta.evaluation.confidence_interval(100 * scores)
    paper_name, published = PUBLISHED[FLAGS.learner]
    report = {
        "learner": FLAGS.learner,
        "ways": FLAGS.ways,
        "shots": FLAGS.shots,
        "recipe": FLAGS.recipe,
        "precision": FLAGS.precision,
        "training_episodes": [train_ways, train_shots, train_queries],
        "meta_batch_size": meta_batch_size,
        "meta_learning_rate": FLAGS.meta_learning_rate,  # None: the recipe's
        "zeroing_trick": FLAGS.zeroing_trick,
        "meta_steps": int(learner.optimizer.iterations.numpy()),
        "training_minutes": round(curve.training_seconds / 60, 1),
        "test_tasks": test_tasks,
        "test_accuracy": round(mean, 2),
        "confidence_95": round(half_width, 2),
        "published": published.get((FLAGS.ways, FLAGS.shots)),
        "paper": paper_name,
        "curve": [
            {
                "meta_step": step,
                "training_minutes": round(seconds / 60, 2),
                "accuracy": accuracy,
                **({"inner_loss": inner_losses} if inner_losses else {}),
            }
            for step, seconds, accuracy, inner_losses in curve.points
        ],
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    stem = f"omniglot_{FLAGS.learner}_{FLAGS.ways}w{FLAGS.shots}s"
    if FLAGS.precision != "float32":
        stem += f"_{FLAGS.precision}"
    if FLAGS.meta_learning_rate is not None:
        stem += f"_meta_lr{FLAGS.meta_learning_rate:g}"
    if FLAGS.zeroing_trick:
        stem += "_zeroing_trick"
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, stem + ".json"), "w") as file:
        json.dump(report, file, indent=1)
    plot(report, curve_tasks, os.path.join(FLAGS.output_dir, stem + ".png"))
    print(json.dumps({key: value for key, value in report.items() if key != "curve"}))  # noqa: T201


if __name__ == "__main__":
    app.run(main)
