"""Where the fastest sinusoid MAML configuration loses against JAX: the step or its launch.

`throughput.py` measured tf_meta's best sinusoid configuration (tasks vectorized, XLA, 10
steps per execution) at about half the meta-steps per second of the JAX reference. This
script separates the compiled step from what runs it (it found the launches, and `fit`
now runs an execution's steps in one XLA program on an endless stream: RESULTS.md). The
same learner (second-order MAML, MLP 1-40-40-1, meta-batch 25, tasks vectorized,
`jit_compile=True`) is run six ways, in
alternating rounds with the JAX reference of `jax_reference.py` (one `jax.jit` call per
meta-step from Python):

- `fit` with `steps_per_execution` 10 and 100 (until commit e53e306 Keras's loop, a
  `tf.function` that takes each batch from the `tf.data` iterator and launches the
  compiled step; since then one XLA program per execution);
- the learner's `train_step` compiled by `tf.function(jit_compile=True)` and called from
  Python for every meta-step, or from a `tf.while_loop` in a `tf.function` (one launch of
  the compiled step per meta-step, no data pipeline);
- 100 meta-steps inside one XLA program (the `tf.while_loop` itself compiled): no launch
  and no iterator between steps, only the step's own computation.

The last column is each row's speed relative to JAX, the median of the per-round ratios.

    python benchmarks/step_overhead.py --rounds=3
"""

import time

import jax_reference
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from throughput import _batches, _dataset, fit_seconds_per_step  # defines --steps, --rounds

import tf_meta

FLAGS = flags.FLAGS

_IN_ONE_PROGRAM = 100  # meta-steps per call of the compiled loop


def _repeat(step):
    """`step()` run `_IN_ONE_PROGRAM` times in a `tf.while_loop`; its last value."""

    def body(index, unused_loss):
        return index + 1, step()

    def condition(index, unused_loss):
        return index < _IN_ONE_PROGRAM

    return tf.while_loop(condition, body, (tf.constant(0), tf.constant(0.0)))[1]


def _learner(**compile_options):
    keras.utils.set_random_seed(0)
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, vectorize_tasks=True)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=True, **compile_options
    )
    return learner


def _seconds(function, calls, steps_per_call):
    function().numpy()  # not timed: the first call traces and compiles
    start = time.perf_counter()
    for _ in range(calls - 1):
        function()
    function().numpy()
    return (time.perf_counter() - start) / (calls * steps_per_call)


def main(argv):
    """Prints a Markdown table: seconds per meta-step of each way, and its speed vs JAX."""
    del argv
    steps = FLAGS.steps or 500
    batches = _batches("sinusoid", 4)
    dataset = _dataset(batches)
    x, y = batches[0]
    x = {key: tf.constant(value) for key, value in x.items()}
    y = tf.constant(y)
    fits = {per: _learner(steps_per_execution=per) for per in (10, 100)}
    for per, learner in fits.items():
        learner.fit(dataset, steps_per_epoch=per, verbose=0)
    learner = _learner()
    learner.fit(dataset, steps_per_epoch=1, verbose=0)

    def one_step():
        return learner.train_step((x, y))["loss"]

    compiled_step = tf.function(one_step, jit_compile=True)

    @tf.function
    def launched_from_a_loop():
        return _repeat(compiled_step)

    @tf.function(jit_compile=True)
    def one_program():
        return _repeat(one_step)

    reference = jax_reference.Reference("sinusoid MAML", batches)
    calls = max(steps // _IN_ONE_PROGRAM, 2)
    ways = {
        "JAX reference (one jit call per step)": lambda: reference.seconds_per_step(steps),
        "fit, steps_per_execution=10": lambda: fit_seconds_per_step(fits[10], dataset, steps, 10),
        "fit, steps_per_execution=100": lambda: fit_seconds_per_step(
            fits[100], dataset, max(steps, 200), 100
        ),
        "compiled train_step, called from Python": lambda: _seconds(compiled_step, steps, 1),
        "compiled train_step, launched from a tf.while_loop": lambda: _seconds(
            launched_from_a_loop, calls, _IN_ONE_PROGRAM
        ),
        f"{_IN_ONE_PROGRAM} train_steps in one XLA program": lambda: _seconds(
            one_program, calls, _IN_ONE_PROGRAM
        ),
    }
    seconds = {name: [] for name in ways}
    for _ in range(FLAGS.rounds):
        for name, way in ways.items():
            seconds[name].append(way())
    jax_seconds = seconds["JAX reference (one jit call per step)"]
    lines = [
        f"sinusoid MAML, meta-batch 25; {steps} steps per turn, {FLAGS.rounds} rounds",
        "",
        "| way | ms per meta-step | meta-steps/s | speed vs JAX (median of rounds) |",
        "| --- | --- | --- | --- |",
    ]
    for name, values in seconds.items():
        ratio = np.median([j / v for j, v in zip(jax_seconds, values, strict=True)])
        median = float(np.median(values))
        lines.append(f"| {name} | {1e3 * median:.3f} | {1 / median:.0f} | {ratio:.2f} |")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    app.run(main)
