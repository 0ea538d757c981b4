"""Meta-RL: rollout speed in the graph against Gymnasium, and MAML curves on three families.

1. **Rollout speed.** The same 2D navigation environment, written as TensorFlow ops
   (`tf_meta.rl.PointNavigation`) and as a `gymnasium.Env` stepped through
   `tf_meta.rl.GymnasiumEnvironment`: environment steps per second of `rollouts.rollout`
   (20 episodes of 100 steps per task, one compiled function), in alternating rounds.
2. **Learning curves.** `tf_meta.rl.MAMLPolicyGradient` on `TwoLinkArm` (in the graph), on
   MuJoCo `HalfCheetah` with target velocities and on Meta-World's ML1 `reach` and
   `pick-place` (all three through Gymnasium; ML1 trains on its 50 training variations and
   is evaluated on its 50 held-out ones, the benchmark's protocol): every `--eval_every`
   meta-steps, the mean return on held-out tasks before and after one adaptation step, with
   95% intervals, and ML1's success rate after one step; a PNG of the curves.

    python benchmarks/meta_rl.py --output_dir=benchmarks/results/meta_rl

`--families` picks the families (and `--norollout_speed` skips part 1), so that one
family can be measured in its own run and directory.

Backups (`--backup_dir`, Keras's `BackupAndRestore`) let a killed run resume; the curve so
far is kept in `<output_dir>/<family>_curve.json` and continued. `--outer_step=trpo` takes
the paper's TRPO step instead of Adam.
"""

import json
import os
import pathlib
import time

import gymnasium
import keras
import matplotlib
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_meta
from tf_meta.backup import replace_atomically
from tf_meta.rl import rollouts

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Alternating rounds of the rollout timing.")
flags.DEFINE_integer("arm_steps", 300, "Meta-steps on TwoLinkArm.")
flags.DEFINE_integer("cheetah_steps", 40, "Meta-steps on HalfCheetah velocity.")
flags.DEFINE_integer("cheetah_horizon", 200, "HalfCheetah episode length (MAML: 200).")
flags.DEFINE_integer("ml1_steps", 20, "Meta-steps on each Meta-World ML1 task.")
flags.DEFINE_list(
    "families",
    ["TwoLinkArm", "HalfCheetah velocity", "Meta-World ML1 reach", "Meta-World ML1 pick-place"],
    "The families whose curves are measured.",
)
flags.DEFINE_bool("rollout_speed", True, "Measure in-graph against Gymnasium rollouts first.")
flags.DEFINE_integer("ml1_horizon", 150, "Meta-World episode length.")
flags.DEFINE_integer("meta_batch_size", 10, "Tasks per meta-step.")
flags.DEFINE_integer("episodes", 10, "Rollouts per task (MAML: 20).")
flags.DEFINE_integer("eval_every", 10, "Meta-steps between evaluations.")
flags.DEFINE_integer("eval_tasks", 10, "Held-out tasks per evaluation.")
flags.DEFINE_string("output_dir", "benchmarks/results/meta_rl", "Where results are written.")
flags.DEFINE_string("backup_dir", None, "BackupAndRestore directory, to resume a killed run.")
flags.DEFINE_enum(
    "outer_step", "optimizer", ["optimizer", "trpo", "ppo"], "Adam 1e-3, TRPO or PPO-clip."
)
flags.DEFINE_float("max_kl", 0.01, "TRPO's trust region (with --outer_step=trpo).")
flags.DEFINE_bool("smoke", False, "A few steps of everything: checks the script.")


class PointNavigationGymnasium(gymnasium.Env):
    """`PointNavigation` written for Gymnasium: the same dynamics, stepped in Python."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def __init__(self):
        self.goal = np.zeros(2, np.float32)
        self.position = np.zeros(2, np.float32)

    def reset(self, seed=None, options=None):
        """Back at the origin."""
        super().reset(seed=seed)
        self.position = np.zeros(2, np.float32)
        return self.position.copy(), {}

    def step(self, action):
        """Moves by the clipped velocity; the reward is minus the distance to the goal."""
        self.position = self.position + np.clip(action, -0.1, 0.1).astype(np.float32)
        reward = -float(np.linalg.norm(self.position - self.goal))
        return self.position.copy(), reward, False, False, {}


gymnasium.register("PointNavigation-v0", entry_point=PointNavigationGymnasium)


class GymnasiumNavigation(tf_meta.rl.GymnasiumEnvironment):
    """The Gymnasium navigation environment as a task family: the goal is the task."""

    task_size = 2

    def __init__(self, episodes):
        super().__init__("PointNavigation-v0", episodes, horizon=100)

    def sample_tasks(self, count, seed):
        """The goals of `PointNavigation`."""
        return tf_meta.rl.PointNavigation().sample_tasks(count, seed)

    def set_task(self, environment, task):
        """Sets the goal."""
        environment.goal = np.asarray(task, np.float32)


def _rollout_rates(episodes, tasks):
    """Environment steps per second of in-graph and Gymnasium rollouts, per round."""

    def act(observations, noise):
        return 0.05 * noise - 0.1 * observations

    families = {
        "in the graph": tf_meta.rl.PointNavigation(),
        "Gymnasium": GymnasiumNavigation(episodes),
    }
    functions = {
        name: tf.function(
            lambda goals, family=family: tf.map_fn(
                lambda goal: tf.reduce_sum(
                    rollouts.rollout(family, act, goal, episodes, [0, 0])[2]
                ),
                goals,
                parallel_iterations=None if family.in_graph else 1,
            )
        )
        for name, family in families.items()
    }
    goals = tf_meta.rl.PointNavigation().sample_tasks(tasks, [1, 1])
    rates = {name: [] for name in families}
    for function in functions.values():
        function(goals)  # traced and warmed up
    for _ in range(FLAGS.rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function(goals)
            rates[name].append(tasks * episodes * 100 / (time.perf_counter() - start))
    return rates


def _policy(observation_size, action_size):
    return keras.Sequential(
        [
            keras.Input((observation_size,)),
            keras.layers.Dense(64, "tanh"),
            keras.layers.Dense(64, "tanh"),
            keras.layers.Dense(action_size),
        ]
    )


class _Evaluate(keras.callbacks.Callback):
    """Returns on held-out tasks before and after one adaptation step, every `every` steps.

    `evaluator` shares the trained learner's policy and runs on the held-out environment.
    """

    def __init__(self, evaluator, tasks, every, curve, path):
        super().__init__()
        self.evaluator, self.tasks, self.every, self.curve = evaluator, tasks, every, curve
        self.path = path

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self.evaluator.log_std.assign(self.model.log_std)
            returns = self.evaluator.adaptation_returns(self.tasks, 1, seed=99).numpy()
            # A resumed run repeats the epoch its backup did not record: its point is replaced.
            self.curve[:] = [point for point in self.curve if point[0] != step]
            self.curve.append(
                [step, *tf_meta.evaluation.confidence_interval(returns[:, 0])]
                + list(tf_meta.evaluation.confidence_interval(returns[:, 1]))
                + [_success_rate(self.evaluator, self.tasks)]
            )
            text = json.dumps(self.curve)
            replace_atomically(self.path, lambda path: pathlib.Path(path).write_text(text))


def _success_rate(learner, tasks):
    """Meta-World's success rate after one adaptation step (None for other families)."""
    environment = learner.environment
    if not isinstance(environment, tf_meta.rl.MetaWorldML1):
        return None
    rates = []
    for index, task in enumerate(tasks):
        seed = tf.constant([98, index * 16], tf.int64)
        path, _ = learner.adapt(learner.initial_weights(), task, seed, 1)
        learner.sample(path[-1], task, seed + [0, 8])
        rates.append(environment.successes.mean())
    return float(np.mean(rates))


def _curve(name, environment, steps, held_out):
    keras.utils.set_random_seed(0)
    policy = _policy(environment.observation_size, environment.action_size)
    learner, evaluator = (
        tf_meta.rl.MAMLPolicyGradient(
            policy,
            family,
            inner_learning_rate=0.1,
            episodes=FLAGS.episodes,
            outer_step=FLAGS.outer_step,
            max_kl=FLAGS.max_kl,
        )
        for family in (environment, held_out)
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    tasks = held_out.sample_tasks(FLAGS.eval_tasks, [7, 7])
    # The curve so far, kept beside the results, so that a resumed run continues it.
    path = os.path.join(FLAGS.output_dir, f"{name}_curve.json")
    backup = FLAGS.backup_dir and os.path.join(FLAGS.backup_dir, name)
    curve = []
    if backup and os.path.exists(backup) and os.path.exists(path):  # a killed run resumes
        with open(path) as file:
            curve = json.load(file)
    callbacks = [_Evaluate(evaluator, tasks, FLAGS.eval_every, curve, path)]
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(backup))
    start = time.perf_counter()
    learner.fit(
        environment.task_stream(FLAGS.meta_batch_size),
        steps_per_epoch=FLAGS.eval_every,
        epochs=max(1, steps // FLAGS.eval_every),
        callbacks=callbacks,
        verbose=2,
    )
    return curve, time.perf_counter() - start


def main(_):
    if FLAGS.smoke:
        FLAGS.rounds, FLAGS.arm_steps, FLAGS.cheetah_steps, FLAGS.ml1_steps = 1, 2, 2, 2
        FLAGS.cheetah_horizon, FLAGS.ml1_horizon = 20, 20
        FLAGS.episodes, FLAGS.meta_batch_size = 2, 2
        FLAGS.eval_every, FLAGS.eval_tasks = 1, 2
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    rates, lines = {}, []
    if FLAGS.rollout_speed:
        rates = _rollout_rates(episodes=20, tasks=2 if FLAGS.smoke else 10)
        lines = [
            "| environment | environment steps/s (per round) | mean |",
            "|---|---|---|",
        ]
        for name, values in rates.items():
            cells = ", ".join(f"{value:,.0f}" for value in values)
            lines.append(f"| {name} | {cells} | {np.mean(values):,.0f} |")
        ratio = np.mean(rates["in the graph"]) / np.mean(rates["Gymnasium"])
        lines.append(f"\nIn the graph / Gymnasium: {ratio:.1f}x\n")

    def cheetah():
        family = tf_meta.rl.HalfCheetah(
            "velocity", episodes=FLAGS.episodes, horizon=FLAGS.cheetah_horizon
        )
        return family, family, FLAGS.cheetah_steps

    def ml1(task):
        return (
            *(
                tf_meta.rl.MetaWorldML1(
                    task, split, episodes=FLAGS.episodes, horizon=FLAGS.ml1_horizon
                )
                for split in ("train", "test")
            ),
            FLAGS.ml1_steps,
        )

    # Held-out tasks: other draws of the same distribution, or ML1's held-out variations.
    families = {
        "TwoLinkArm": lambda: (tf_meta.rl.TwoLinkArm(),) * 2 + (FLAGS.arm_steps,),
        "HalfCheetah velocity": cheetah,
        "Meta-World ML1 reach": lambda: ml1("reach-v3"),
        "Meta-World ML1 pick-place": lambda: ml1("pick-place-v3"),
    }
    unknown = sorted(set(FLAGS.families) - set(families))
    if unknown:
        raise ValueError(f"Unknown `--families` {unknown}; choose from {sorted(families)}.")
    curves, seconds = {}, {}
    for name in FLAGS.families:
        environment, held_out, steps = families[name]()
        curves[name], seconds[name] = _curve(name.replace(" ", "_"), environment, steps, held_out)
    lines += [
        "| family | meta-steps | training seconds | return before adaptation | after one "
        "step | success after one step |",
        "|---|---|---|---|---|---|",
    ]
    for name, curve in curves.items():
        for step, before, before_half, after, after_half, success in curve:
            rate = "" if success is None else f"{success:.0%}"
            lines.append(
                f"| {name} | {step} | {seconds[name]:.0f} | {before:.1f} ± {before_half:.1f} | "
                f"{after:.1f} ± {after_half:.1f} | {rate} |"
            )
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as file:
        file.write(report + "\n")
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as file:
        json.dump({"rates": rates, "curves": curves, "seconds": seconds}, file, indent=1)
    _plot_curves(curves, os.path.join(FLAGS.output_dir, "curves.png"))


def _plot_curves(curves, path):
    """Plots the return before and after one step, and ML1's success rate, to `path`."""
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    for axis, (name, curve) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        values = np.array(curve)
        steps = values[:, 0].astype(float)
        for column, label in ((1, "before adaptation"), (3, "after one step")):
            axis.errorbar(
                steps,
                values[:, column].astype(float),
                yerr=values[:, column + 1].astype(float),
                label=label,
            )
        handles, labels = axis.get_legend_handles_labels()
        if values[0, 5] is not None:
            rates_axis = axis.twinx()
            rates_axis.plot(steps, 100 * values[:, 5].astype(float), "k:", marker=".")
            rates_axis.set_ylabel("success after one step (%, dotted)")
            rates_axis.set_ylim(0, 100)
        axis.set_title(name)
        axis.set_xlabel("meta-steps")
        axis.set_ylabel("mean return on held-out tasks")
        axis.legend(handles, labels, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
