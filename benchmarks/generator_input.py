"""Meta-steps per second of sinusoid MAML fed by a Python generator and by a `tf.data.Dataset`.

A generator's batches reach the step with an unknown meta-batch size (Keras types them so);
a Dataset's keep the static one. For each speed option (none, `jit_compile`,
`vectorize_tasks`, both, both with `steps_per_execution=10`), both inputs run in alternating
turns after a warm-up, and the table reports steady meta-steps per second. It measures issue
22's retracing trap: where XLA compiles the step again for every batch.

    python benchmarks/generator_input.py
"""

import time

import keras
import numpy as np
from absl import app, flags

import tf_meta

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 50, "Meta-steps per timed turn (a multiple of 10).")
flags.DEFINE_integer("rounds", 2, "Alternating rounds.")
flags.DEFINE_bool(
    "smoke", False, "10 steps, 1 round, without XLA (whose trap takes minutes): checks the script."
)

OPTIONS = {
    "default": {},
    "jit_compile": {"jit_compile": True},
    "vectorize_tasks": {"vectorize_tasks": True},
    "jit_compile + vectorize_tasks": {"jit_compile": True, "vectorize_tasks": True},
    "jit_compile + vectorize_tasks, steps_per_execution=10": {
        "jit_compile": True,
        "vectorize_tasks": True,
        "steps_per_execution": 10,
    },
}


def _generator():
    for x, y in tf_meta.data.sinusoid(meta_batch_size=25, seed=0):
        yield {key: value.numpy() for key, value in x.items()}, y.numpy()


def _learner(options):
    keras.utils.set_random_seed(0)
    learner = tf_meta.MAML(
        tf_meta.models.mlp(),
        inner_learning_rate=0.01,
        vectorize_tasks=options.get("vectorize_tasks", False),
    )
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="mse",
        jit_compile=options.get("jit_compile", False),
        steps_per_execution=options.get("steps_per_execution", 1),
    )
    return learner


def _rate(learner, data, steps):
    """Meta-steps per second of one `fit` of `steps` steps, after a 10-step warm-up."""
    learner.fit(data, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    learner.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps / (time.perf_counter() - start)


def main(_):
    options = OPTIONS
    if FLAGS.smoke:
        FLAGS.steps, FLAGS.rounds = 10, 1
        options = {name: OPTIONS[name] for name in ("default", "vectorize_tasks")}
    lines = [
        "| option | generator (steps/s) | Dataset (steps/s) | generator / Dataset |",
        "|---|---|---|---|",
    ]
    for name, chosen in options.items():
        learners = {"generator": _learner(chosen), "dataset": _learner(chosen)}
        inputs = {"generator": _generator(), "dataset": tf_meta.data.sinusoid(seed=0)}
        rates = {"generator": [], "dataset": []}
        for _ in range(FLAGS.rounds):
            for form in ("generator", "dataset"):
                rates[form].append(_rate(learners[form], inputs[form], FLAGS.steps))
        generator, dataset = np.mean(rates["generator"]), np.mean(rates["dataset"])
        lines.append(f"| {name} | {generator:.1f} | {dataset:.1f} | {generator / dataset:.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
