"""MAML on sinusoid regression against a pretrained baseline (Finn et al. 2017, Figure 3).

Run `tf-meta-sinusoid --help` for the flags. The job meta-trains MAML (MLP 1-40-40-1,
K=10 shots, meta-batch 25, inner learning rate 0.01, one inner step, Adam 1e-3), trains the
paper's baseline (the same network trained on all tasks jointly, without adaptation) on
the same stream, then fine-tunes both with the same inner learning rate on 600 held-out
tasks and reports the query MSE after 0, 1 and 10 steps with 95% confidence intervals. It
writes `results.md`, `results.json` and `adapted_curves.png` to `--output_dir`.
"""

import json
import os
import sys

import keras
import matplotlib.pyplot as plt
import numpy as np
from absl import flags

import tf_meta
from tf_meta import jobs

FLAGS = flags.FLAGS
flags.DEFINE_integer("meta_steps", 20000, "Meta-training steps for each learner.")
flags.DEFINE_bool("paper", False, "Use the paper's budget: 70,000 meta-steps.")
flags.DEFINE_integer("shots", 10, "Support examples per task (K).")
flags.DEFINE_integer("meta_batch_size", 25, "Tasks per meta-step.")
flags.DEFINE_float("inner_learning_rate", 0.01, "Inner-loop step size (alpha).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the outer loop (beta).")
flags.DEFINE_integer("eval_tasks", 600, "Held-out tasks in the evaluation pool.")
flags.DEFINE_integer("seed", 0, "Seed of weights and training tasks; evaluation uses seed+1.")
flags.DEFINE_string("output_dir", "results/sinusoid", "Where results and the plot are written.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 shows a progress bar per epoch.")
flags.DEFINE_enum(
    "strategy",
    "default",
    tf_meta.distribution.STRATEGIES,
    "Distribution strategy; multi_worker reads the cluster from TF_CONFIG.",
)
flags.DEFINE_string(
    "backup_dir",
    None,
    "BackupAndRestore directory: after a crash, the same command resumes from the last "
    "epoch's backup.",
)
flags.DEFINE_string("tensorboard_dir", None, "Where Keras's TensorBoard callback writes logs.")

EVALUATION_STEPS = (0, 1, 10)
EPOCHS = 10


def _train(learner, meta_steps, seed, worker):
    callbacks = []
    if FLAGS.tensorboard_dir:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(FLAGS.tensorboard_dir, learner.name, worker))
        )
    tf_meta.training.train(
        learner,
        lambda start_step, context: tf_meta.data.sinusoid(
            shots=FLAGS.shots,
            queries=FLAGS.shots,
            meta_batch_size=FLAGS.meta_batch_size,
            seed=seed,
            start_step=start_step,
            input_context=context,
        ),
        epochs=EPOCHS,
        steps_per_epoch=max(1, meta_steps // EPOCHS),
        backup_directory=(
            os.path.join(FLAGS.backup_dir, learner.name, worker) if FLAGS.backup_dir else None
        ),
        callbacks=callbacks,
        verbose=FLAGS.verbose,
    )


def _plot(learners, pool_seed, path):
    tasks = 3
    x, _ = next(
        iter(
            tf_meta.data.sinusoid(
                shots=FLAGS.shots, queries=1, meta_batch_size=tasks, seed=pool_seed
            )
        )
    )
    amplitude, phase = (
        p.numpy() for p in tf_meta.data.sinusoid_parameters(np.arange(tasks), pool_seed)
    )
    grid = np.linspace(-5, 5, 200, dtype="float32")[:, None]
    figure, axes = plt.subplots(1, tasks, figsize=(5 * tasks, 4), sharey=True)
    for task, axis in enumerate(axes):
        axis.plot(grid, amplitude[task] * np.sin(grid - phase[task]), "k", label="true function")
        support_x, support_y = (
            x[tf_meta.episode.SUPPORT_X][task],
            x[tf_meta.episode.SUPPORT_Y][task],
        )
        for (name, learner), style in zip(learners.items(), ("-", "--"), strict=True):
            for steps, color in ((0, "tab:gray"), (10, "tab:red" if style == "-" else "tab:blue")):
                adapted = learner.adapted_model(support_x, support_y, steps=steps)
                axis.plot(
                    grid,
                    adapted(grid, training=True),
                    style,
                    color=color,
                    label=f"{name}, {steps} steps",
                )
        axis.plot(support_x, support_y, "^", color="tab:purple", label=f"{FLAGS.shots} shots")
        axis.set_title(f"amplitude {amplitude[task]:.2f}, phase {phase[task]:.2f}")
        axis.set_xlabel("x")
    axes[0].legend(fontsize="small")
    figure.suptitle(
        f"Adapted curves on held-out tasks, inner learning rate {FLAGS.inner_learning_rate}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    """Trains MAML and the baseline, evaluates both, and writes the report."""
    del argv

    meta_steps = 70000 if FLAGS.paper else FLAGS.meta_steps
    strategy = tf_meta.distribution.strategy_from_name(FLAGS.strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = resolver.task_id if resolver is not None and resolver.task_type else 0
    # Workers keep separate backups and logs; worker 0 writes the report.
    worker = f"worker-{task_id}"
    output_dir = FLAGS.output_dir if task_id == 0 else os.path.join(FLAGS.output_dir, worker)
    os.makedirs(output_dir, exist_ok=True)
    pool_seed = FLAGS.seed + 1
    learners = {}
    for name, inner_steps in (("MAML", 1), ("pretrained", 0)):
        keras.utils.set_random_seed(FLAGS.seed)
        with strategy.scope():
            learners[name] = tf_meta.MAML(
                tf_meta.models.mlp(input_shape=(1,), hidden_units=(40, 40), outputs=1),
                inner_learning_rate=FLAGS.inner_learning_rate,
                inner_steps=inner_steps,
                name=name.lower(),
            )
            learners[name].compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate), loss="mse")
        sys.stdout.write(
            f"Training {name} for {meta_steps} meta-steps on "
            f"{strategy.num_replicas_in_sync} replica(s)\n"
        )
        _train(learners[name], meta_steps, FLAGS.seed, worker)

    pool = tf_meta.data.sinusoid(
        shots=FLAGS.shots,
        queries=FLAGS.shots,
        meta_batch_size=100,
        seed=pool_seed,
        num_tasks=FLAGS.eval_tasks,
    )
    results = {}
    for name, learner in learners.items():
        for steps in EVALUATION_STEPS:
            scores = tf_meta.evaluation.task_scores(learner, pool, inner_steps=steps)
            results[f"{name}/{steps}"] = tf_meta.evaluation.confidence_interval(scores)

    header = "| learner | " + " | ".join(_mse_after(steps) for steps in EVALUATION_STEPS) + " |"
    rows = [header, "|" + " --- |" * (len(EVALUATION_STEPS) + 1)]
    for name in learners:
        cells = [
            f"{results[f'{name}/{s}'][0]:.3f} ± {results[f'{name}/{s}'][1]:.3f}"
            for s in EVALUATION_STEPS
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    command = " ".join(["tf-meta-sinusoid", *sys.argv[1:]])
    report = (
        f"Sinusoid regression, K={FLAGS.shots}, {meta_steps} meta-steps, meta-batch "
        f"{FLAGS.meta_batch_size}, inner learning rate {FLAGS.inner_learning_rate}; query MSE on "
        f"{FLAGS.eval_tasks} held-out tasks, mean ± 95% confidence interval.\n\n{table}\n\n"
        f"Command: `{command}`\n"
    )
    # Each output is written under a temporary name and renamed: a killed job leaves the
    # previous file or the complete new one, never half of one.
    summary = json.dumps({"meta_steps": meta_steps, "results": results}, indent=2)
    for name, content in (("results.md", report), ("results.json", summary)):
        tf_meta.backup.replace_atomically(
            os.path.join(output_dir, name), lambda path, text=content: jobs.write_text(path, text)
        )
    tf_meta.backup.replace_atomically(
        os.path.join(output_dir, "adapted_curves.png"),
        lambda path: _plot(learners, pool_seed, path),
    )
    sys.stdout.write(f"\n{report}\nWrote {output_dir}/results.md and adapted_curves.png\n")


def _mse_after(steps: int) -> str:
    return f"MSE after {steps} step{'' if steps == 1 else 's'}"


def run():
    """Console-script entry point."""
    jobs.run(main, __name__)
