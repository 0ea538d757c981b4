"""MAML on 2D point navigation against a pretrained and a random policy (Finn et al. 2017).

Run `tf-meta-navigation --help` for the flags. The job meta-trains
`tf_meta.rl.MAMLPolicyGradient` (Gaussian policy, MLP 2-100-100-2, 20 rollouts per task,
meta-batch 20, inner learning rate 0.1, one inner step, Adam as the outer step, or with
`--outer_step=trpo` the paper's TRPO step, or with `--outer_step=ppo` PPO's clipped
surrogate), trains the pretrained baseline (the same policy
trained by policy gradient on all tasks, without adaptation) on the same stream, and keeps a
randomly initialized policy. It then adapts all three with the same inner learning rate on
held-out goals and reports the mean episode return after 0, 1, 2 and 3 policy-gradient
steps with 95% confidence intervals over goals, as in the paper's Figure 4. It writes
`results.md`, `results.json`, `returns.png` and `trajectories.png` to `--output_dir`.
"""

import json
import os
import sys
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from absl import flags

import tf_meta
from tf_meta import jobs

FLAGS = flags.FLAGS
flags.DEFINE_integer("meta_steps", 500, "Meta-training steps for MAML and the pretrained policy.")
flags.DEFINE_integer("meta_batch_size", 20, "Tasks (goals) per meta-step.")
flags.DEFINE_integer("episodes", 20, "Rollouts per task for adaptation and for the query.")
flags.DEFINE_float("inner_learning_rate", 0.1, "Inner policy-gradient step size (alpha).")
flags.DEFINE_float(
    "learning_rate",
    None,
    "Adam learning rate of the outer step; by default 1e-3, and 3e-4 for PPO, whose five "
    "updates per batch at 1e-3 drifted away from its peak (benchmarks/RESULTS.md).",
)
flags.DEFINE_enum(
    "outer_step",
    "optimizer",
    ["optimizer", "trpo", "ppo"],
    "The outer step: Adam (--learning_rate), MAML's TRPO step (--max_kl), or PPO's clipped "
    "surrogate with Adam (--learning_rate, --clip_ratio, --outer_epochs).",
)
flags.DEFINE_float("max_kl", 0.01, "The trust region of the TRPO outer step.")
flags.DEFINE_float("clip_ratio", 0.2, "PPO's clipping range of the importance ratio.")
flags.DEFINE_integer("outer_epochs", 5, "PPO's Adam updates on each batch of rollouts.")
flags.DEFINE_integer("hidden_units", 100, "Units in each of the policy's two hidden layers.")
flags.DEFINE_integer("eval_tasks", 40, "Held-out goals.")
flags.DEFINE_integer("seed", 0, "Seed of weights and training goals; evaluation uses seed+1.")
flags.DEFINE_string("output_dir", "results/navigation", "Where results and plots are written.")
flags.DEFINE_string(
    "backup_dir",
    None,
    "Keras BackupAndRestore directory: after a crash, the same command resumes from the last "
    "epoch's backup.",
)
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 shows a progress bar per epoch.")

ADAPTATION_STEPS = 3
EPOCHS = 10


def _policy():
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(FLAGS.hidden_units, "relu"),
            keras.layers.Dense(FLAGS.hidden_units, "relu"),
            keras.layers.Dense(2),
        ]
    )


def _learner(name, inner_steps, environment):
    keras.utils.set_random_seed(FLAGS.seed)
    learner = tf_meta.rl.MAMLPolicyGradient(
        _policy(),
        environment,
        inner_learning_rate=FLAGS.inner_learning_rate,
        inner_steps=inner_steps,
        episodes=FLAGS.episodes,
        seed=FLAGS.seed,
        outer_step=FLAGS.outer_step,
        max_kl=FLAGS.max_kl,
        clip_ratio=FLAGS.clip_ratio,
        outer_epochs=FLAGS.outer_epochs,
        name=name,
    )
    learning_rate = FLAGS.learning_rate
    if learning_rate is None:
        learning_rate = 3e-4 if FLAGS.outer_step == "ppo" else 1e-3
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return learner


def _train(learner, environment):
    callbacks = []
    if FLAGS.backup_dir:
        callbacks.append(
            keras.callbacks.BackupAndRestore(os.path.join(FLAGS.backup_dir, learner.name))
        )
    learner.fit(
        environment.task_stream(FLAGS.meta_batch_size, seed=FLAGS.seed),
        epochs=EPOCHS,
        steps_per_epoch=max(1, FLAGS.meta_steps // EPOCHS),
        callbacks=callbacks,
        verbose=FLAGS.verbose,
    )


def _plot_returns(results, bound, path):
    figure, axis = plt.subplots(figsize=(5, 4))
    steps = np.arange(ADAPTATION_STEPS + 1)
    for name, rows in results.items():
        means = [mean for mean, _ in rows]
        half_widths = [half for _, half in rows]
        axis.errorbar(steps, means, yerr=half_widths, marker="o", capsize=3, label=name)
    axis.axhline(bound, color="gray", linestyle="--", label="best goal-blind policy")
    axis.set_xticks(steps)
    axis.set_xlabel("policy-gradient adaptation steps")
    axis.set_ylabel("mean episode return (95% interval)")
    axis.set_title("2D navigation, held-out goals")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_trajectories(learner, goals, path):
    figure, axes = plt.subplots(1, len(goals), figsize=(3.2 * len(goals), 3.4))
    for index, (axis, goal) in enumerate(zip(axes, goals, strict=True)):
        seed = tf.constant([FLAGS.seed + 2, index * 16], tf.int64)
        initial = learner.initial_weights()
        path_weights, _ = learner.adapt(initial, goal, seed, ADAPTATION_STEPS)
        for steps, weights in ((0, initial), (ADAPTATION_STEPS, path_weights[-1])):
            # The mean action at every step, without the exploration noise.
            positions = tf_meta.rl.rollouts.rollout(
                learner.environment,
                lambda observations, noise, weights=weights: learner.mean_actions(
                    weights, observations
                ),
                goal,
                1,
                seed,
            )[0][0].numpy()
            axis.plot(positions[:, 0], positions[:, 1], label=f"{steps} steps")
        axis.plot(*goal.numpy(), "k*", markersize=12, label="goal")
        axis.set_xlim(-0.6, 0.6)
        axis.set_ylim(-0.6, 0.6)
        axis.set_aspect("equal")
    axes[0].legend(fontsize="small")
    figure.suptitle(f"MAML's mean trajectory before and after {ADAPTATION_STEPS} adaptation steps")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    """Trains MAML and the pretrained policy, evaluates the three, and writes the report."""
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    environment = tf_meta.rl.PointNavigation()
    learners = {
        "MAML": _learner("maml", 1, environment),
        "pretrained": _learner("pretrained", 0, environment),
        "random": _learner("random", 1, environment),
    }
    seconds = {}
    for name in ("MAML", "pretrained"):
        sys.stdout.write(f"Training {name} for {FLAGS.meta_steps} meta-steps\n")
        start = time.perf_counter()
        _train(learners[name], environment)
        seconds[name] = time.perf_counter() - start
    goals = environment.sample_tasks(FLAGS.eval_tasks, [FLAGS.seed + 1, 0])
    results = {}
    for name, learner in learners.items():
        returns = learner.adaptation_returns(goals, ADAPTATION_STEPS, seed=FLAGS.seed + 1)
        results[name] = [
            tf_meta.evaluation.confidence_interval(returns[:, steps].numpy())
            for steps in range(ADAPTATION_STEPS + 1)
        ]
    bound = environment.goal_blind_bound(goals)
    header = "| policy | " + " | ".join(
        f"return after {steps} step{'' if steps == 1 else 's'}"
        for steps in range(ADAPTATION_STEPS + 1)
    )
    rows = [header + " |", "|" + " --- |" * (ADAPTATION_STEPS + 2)]
    for name, cells in results.items():
        rows.append(
            f"| {name} | " + " | ".join(f"{mean:.1f} ± {half:.1f}" for mean, half in cells) + " |"
        )
    command = " ".join(["tf-meta-navigation", *sys.argv[1:]])
    training = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    report = (
        f"2D point navigation, {FLAGS.meta_steps} meta-steps of {FLAGS.meta_batch_size} goals, "
        f"{FLAGS.episodes} rollouts per task, inner learning rate {FLAGS.inner_learning_rate}, "
        f"outer step {FLAGS.outer_step}; "
        f"mean episode return (horizon 100) on {FLAGS.eval_tasks} held-out goals, mean ± 95% "
        f"confidence interval over goals. Training time: {training}.\n\n"
        + "\n".join(rows)
        + f"\n\nBefore adaptation the policy does not see the goal, and no such policy's expected "
        f"return exceeds {bound:.1f} on these goals (`PointNavigation.goal_blind_bound`).\n"
        + f"\nCommand: `{command}`\n"
    )
    summary = json.dumps(
        {
            "meta_steps": FLAGS.meta_steps,
            "results": results,
            "goal_blind_bound": bound,
            "seconds": seconds,
        }
    )
    for name, content in (("results.md", report), ("results.json", summary)):
        tf_meta.backup.replace_atomically(
            os.path.join(FLAGS.output_dir, name),
            lambda path, text=content: jobs.write_text(path, text),
        )
    tf_meta.backup.replace_atomically(
        os.path.join(FLAGS.output_dir, "returns.png"),
        lambda path: _plot_returns(results, bound, path),
    )
    tf_meta.backup.replace_atomically(
        os.path.join(FLAGS.output_dir, "trajectories.png"),
        lambda path: _plot_trajectories(learners["MAML"], goals[:4], path),
    )
    sys.stdout.write(f"\n{report}\nWrote {FLAGS.output_dir}\n")


def run():
    """Console-script entry point."""
    jobs.run(main, __name__)
