"""Meta-steps per second, first-step time and peak memory, against a hand-written baseline.

The baseline is the meta-learner a Keras 3 user writes today: a `keras.Model` whose
`train_step` loops over the tasks of the meta-batch in Python and, for each, adapts with a
nested `tf.GradientTape` and `stateless_call` (MAML), adapts with Adam and steps toward the
mean adapted weights (Reptile, on Omniglot), or embeds its support and query sets
(prototypical network), in graph mode. Every configuration of tf_meta is timed in the same
process on the same in-memory episodes (from the first to the last step of a `fit` call, so
that `fit`'s own setup is not counted), in interleaved turns (baseline, configuration,
baseline, configuration, ...), and reported as its speed relative to the baseline's turns
next to it, so that the machine's drift cancels. Peak memory is measured in a fresh process
per configuration (the peak resident set, VmHWM, after a few steps), next to the process's
peak before its first step, for the baselines, each learner's default configuration and
gradient checkpointing.

Problems:
- sinusoid: MLP 1-40-40-1, meta-batch 25, 10 shots and 10 queries, inner learning rate 0.01;
- omniglot: 5-way 1-shot episodes, conv4, meta-batch 32 (`--omniglot_tasks`), inner
  learning rate 0.4, with `--queries` per class (15 by default; MAML's own Omniglot recipe
  has 1);
- omniglot5: the same with 5 inner steps: second-order MAML with gradient checkpointing,
  against second-order MAML without it.

With JAX installed (`pip install ".[bench]"`), the JAX implementations of
`jax_reference.py` (tasks under `vmap`, the whole meta-step under one `jit`, optax's Adam)
are timed as configurations too, in turns alternating with the hand-written baseline of
their workload, and every row also reports its speed relative to the JAX reference of
its workload, from the same run.

    TF_META_DATA_DIR=../shared/data python benchmarks/throughput.py
"""

import json
import re
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tf_meta

try:
    import jax_reference
except ImportError:  # JAX is in the `bench` extra
    jax_reference = None

FLAGS = flags.FLAGS
flags.DEFINE_list("problems", ["sinusoid", "omniglot", "omniglot5"], "Problems to measure.")
flags.DEFINE_integer("steps", 0, "Meta-steps per timed turn; 0 picks per problem.")
flags.DEFINE_integer("queries", 15, "Omniglot query examples per class.")
flags.DEFINE_integer("omniglot_tasks", 32, "Tasks per Omniglot meta-batch.")
flags.DEFINE_multi_string(
    "only", [], "Measure only this configuration (a name; repeat the flag), and its baseline."
)
flags.DEFINE_integer("rounds", 2, "Timed turns of each configuration and of the baseline.")
flags.DEFINE_string("data_dir", None, "Directory holding omniglot/omniglot28.npz.")
flags.DEFINE_string("memory_of", None, "Internal: measure one configuration's peak memory.")
flags.DEFINE_bool(
    "smoke", False, "Sinusoid, three configurations, one round: checks the script runs."
)

STEPS = {"sinusoid": 200, "omniglot": 4, "omniglot5": 3}
# The JAX reference of each workload: {configuration name: jax_reference workload}.
JAX_WORKLOADS = {
    "JAX MAML": "sinusoid MAML",
    "JAX MAML (Omniglot)": "omniglot MAML",
    "JAX prototypical network": "omniglot prototypical",
}


class HandWrittenMAML(keras.Model):
    """MAML as a user writes it in Keras 3: a Python loop over tasks, nested tapes.

    Args:
        network: The network whose initialization is meta-learned.
        inner_learning_rate: Step size of the inner gradient descent.
        inner_steps: Inner steps per task.
        first_order: Whether to stop the inner gradients.
    """

    def __init__(self, network, inner_learning_rate, inner_steps=1, first_order=False):
        super().__init__()
        self.network = network
        self.inner_learning_rate = inner_learning_rate
        self.inner_steps = inner_steps
        self.first_order = first_order

    def call(self, x, training=False):
        """The network on the first task's queries (only to build the model)."""
        return self.network(x["query_x"][0], training=training)

    def support_gradients(self, weights, non_trainable, support_x, support_y):
        """The support loss's gradient at `weights`, on a tape of its own (`stateless_call`)."""
        with tf.GradientTape() as inner:
            inner.watch(weights)
            predictions, _ = self.network.stateless_call(
                weights, non_trainable, support_x, training=True
            )
            support_loss = self.compute_loss(y=support_y, y_pred=predictions)
        return inner.gradient(support_loss, weights)

    def train_step(self, data):
        """One meta-step: a Python loop over tasks, each adapted with a nested tape."""
        x, query_y = data
        variables = self.network.trainable_variables
        non_trainable = [v.value for v in self.network.non_trainable_variables]
        with tf.GradientTape() as outer:
            losses = []
            for task in range(x["support_x"].shape[0]):
                weights = [v.value for v in variables]
                for _ in range(self.inner_steps):
                    gradients = self.support_gradients(
                        weights, non_trainable, x["support_x"][task], x["support_y"][task]
                    )
                    if self.first_order:
                        gradients = [tf.stop_gradient(g) for g in gradients]
                    weights = [
                        w - self.inner_learning_rate * g
                        for w, g in zip(weights, gradients, strict=True)
                    ]
                predictions, _ = self.network.stateless_call(
                    weights, non_trainable, x["query_x"][task], training=True
                )
                losses.append(self.compute_loss(y=query_y[task], y_pred=predictions))
            loss = tf.add_n(losses) / len(losses)
        self.optimizer.apply_gradients(zip(outer.gradient(loss, variables), variables, strict=True))
        return {"loss": loss}


class HandWrittenReptile(HandWrittenMAML):
    """Reptile as a user writes it in Keras 3: a Python loop over tasks, no outer tape.

    Each task takes `inner_steps` Adam steps (`beta_1 = 0`, as in the paper) on its support
    set with `stateless_call`; the meta-step moves the weights toward the mean adapted
    weights through the compiled optimizer. The adapted weights also score the queries for
    the loss, as tf_meta's step does. The constructor and `call` are HandWrittenMAML's.

    Args:
        network: The network to meta-learn.
        inner_learning_rate: Adam's learning rate in the inner loop.
        inner_steps: Inner steps per task.
    """

    def train_step(self, data):
        """One meta-step: a Python loop over tasks, each adapted by Adam on its support set."""
        x, query_y = data
        variables = self.network.trainable_variables
        non_trainable = [v.value for v in self.network.non_trainable_variables]
        adapted, losses = [], []
        for task in range(x["support_x"].shape[0]):
            weights = [v.value for v in variables]
            second_moments = [tf.zeros_like(w) for w in weights]
            for step in range(1, self.inner_steps + 1):
                gradients = self.support_gradients(
                    weights, non_trainable, x["support_x"][task], x["support_y"][task]
                )
                second_moments = [
                    0.999 * v + 0.001 * tf.square(g)
                    for v, g in zip(second_moments, gradients, strict=True)
                ]
                rate = self.inner_learning_rate * (1 - 0.999**step) ** 0.5
                weights = [
                    w - rate * g / (tf.sqrt(v) + 1e-7)
                    for w, g, v in zip(weights, gradients, second_moments, strict=True)
                ]
            predictions, _ = self.network.stateless_call(
                weights, non_trainable, x["query_x"][task], training=True
            )
            losses.append(self.compute_loss(y=query_y[task], y_pred=predictions))
            adapted.append(weights)
        means = [tf.add_n(list(values)) / len(adapted) for values in zip(*adapted, strict=True)]
        self.optimizer.apply_gradients(
            zip(
                [v.value - m for v, m in zip(variables, means, strict=True)], variables, strict=True
            )
        )
        return {"loss": tf.add_n(losses) / len(losses)}


class HandWrittenPrototypicalNetwork(keras.Model):
    """A prototypical network as a user writes it in Keras 3: a Python loop over tasks.

    Args:
        encoder: The embedding network.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def call(self, x, training=False):
        """The encoder on the first task's queries (only to build the model)."""
        return self.encoder(x["query_x"][0], training=training)

    def train_step(self, data):
        """One meta-step: a Python loop over tasks, each scored against its prototypes."""
        x, query_y = data
        with tf.GradientTape() as tape:
            losses = []
            for task in range(x["support_x"].shape[0]):
                support = self.encoder(x["support_x"][task], training=True)
                query = self.encoder(x["query_x"][task], training=True)
                labels = x["support_y"][task]
                ways = tf.reduce_max(labels) + 1
                prototypes = tf.math.unsorted_segment_mean(support, labels, ways)
                distances = tf.reduce_sum(
                    tf.square(query[:, None, :] - prototypes[None, :, :]), axis=-1
                )
                losses.append(self.compute_loss(y=query_y[task], y_pred=-distances))
            loss = tf.add_n(losses) / len(losses)
        variables = self.encoder.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return {"loss": loss}


def _configurations(problem):
    """{name: (baseline name, factory of (learner, compile options, precision))}."""
    if problem == "sinusoid":
        inner = {"inner_learning_rate": 0.01}

        def network():
            return tf_meta.models.mlp()

        def maml(**options):
            return lambda: tf_meta.MAML(network(), **inner, **options)

        baseline = {"MAML baseline": lambda: HandWrittenMAML(network(), 0.01)}
        family = {
            "MAML (second order)": maml(),  # vectorize_tasks="auto": vectorized
            "MAML, task loop": maml(vectorize_tasks=False),
            "MAML, XLA": maml(),
            "MAML, tasks vectorized, XLA": maml(vectorize_tasks=True),
            "MAML, tasks vectorized, XLA, 10 steps per execution": maml(vectorize_tasks=True),
            "MAML, tasks vectorized, XLA, 100 steps per execution": maml(vectorize_tasks=True),
            "MAML (first order)": maml(first_order=True),
            "MAML (first order), tasks vectorized, XLA": maml(
                first_order=True, vectorize_tasks=True
            ),
            "ANIL": lambda: tf_meta.ANIL(network(), **inner),
            "ANIL, tasks vectorized, XLA": lambda: tf_meta.ANIL(
                network(), vectorize_tasks=True, **inner
            ),
        }
        reptile = {
            "Reptile": lambda: tf_meta.Reptile(network(), inner_learning_rate=0.001),
            "Reptile, tasks vectorized, XLA": lambda: tf_meta.Reptile(
                network(), inner_learning_rate=0.001, vectorize_tasks=True
            ),
        }
        factories = {
            **baseline,
            **family,
            "Reptile baseline": lambda: HandWrittenReptile(network(), 0.001, inner_steps=5),
            **reptile,
        }
        baselines = {name: "MAML baseline" for name in family}
        baselines.update({name: "Reptile baseline" for name in reptile})
        if jax_reference is not None:
            factories["JAX MAML"] = None
            baselines["JAX MAML"] = "MAML baseline"
        return factories, baselines
    steps = 5 if problem == "omniglot5" else 1
    inner = {"inner_learning_rate": 0.4, "inner_steps": steps}

    def head():
        return tf_meta.models.conv4(ways=5)

    def maml(**options):
        return lambda: tf_meta.MAML(head(), **inner, **options)

    if problem == "omniglot5":  # gradient checkpointing against tf_meta's own default
        factories = {
            "MAML (second order)": maml(),
            "MAML, gradient checkpointing": maml(gradient_checkpointing=True),
        }
        return factories, {"MAML, gradient checkpointing": "MAML (second order)"}
    family = {
        "MAML (second order)": maml(),
        "MAML, XLA": maml(),
        "MAML, bfloat16": maml(),
        "MAML, tasks vectorized": maml(vectorize_tasks=True),
        "MAML (first order)": maml(first_order=True),
        "MAML (first order), bfloat16": maml(first_order=True),
        "Meta-SGD": lambda: tf_meta.MetaSGD(head(), **inner),
        "ANIL": lambda: tf_meta.ANIL(head(), **inner),
        "ANIL, bfloat16": lambda: tf_meta.ANIL(head(), **inner),
    }
    reptile = {"Reptile": lambda: tf_meta.Reptile(head(), inner_learning_rate=0.001)}
    prototypical = {
        "prototypical network": lambda: tf_meta.PrototypicalNetwork(
            tf_meta.models.conv4(ways=None)
        ),
        "prototypical network, bfloat16": lambda: tf_meta.PrototypicalNetwork(
            tf_meta.models.conv4(ways=None)
        ),
        "prototypical network, XLA": lambda: tf_meta.PrototypicalNetwork(
            tf_meta.models.conv4(ways=None)
        ),
        "prototypical network, tasks vectorized": lambda: tf_meta.PrototypicalNetwork(
            tf_meta.models.conv4(ways=None), vectorize_tasks=True
        ),
    }
    factories = {
        "MAML baseline": lambda: HandWrittenMAML(head(), 0.4),
        **family,
        "Reptile baseline": lambda: HandWrittenReptile(head(), 0.001, inner_steps=5),
        **reptile,
        "prototypical network baseline": lambda: HandWrittenPrototypicalNetwork(
            tf_meta.models.conv4(ways=None)
        ),
        **prototypical,
    }
    baselines = {name: "MAML baseline" for name in family}
    baselines["Reptile"] = "Reptile baseline"
    baselines.update({name: "prototypical network baseline" for name in prototypical})
    if jax_reference is not None:
        factories["JAX MAML (Omniglot)"] = factories["JAX prototypical network"] = None
        baselines["JAX MAML (Omniglot)"] = "MAML baseline"
        baselines["JAX prototypical network"] = "prototypical network baseline"
    return factories, baselines


def _batches(problem, count):
    """`count` distinct episode batches, held in memory."""
    if problem == "sinusoid":
        stream = tf_meta.data.sinusoid(meta_batch_size=25, seed=0)
    else:
        stream = tf_meta.data.episodes(
            tf_meta.data.load_omniglot("vinyals_train", data_dir=FLAGS.data_dir),
            ways=5,
            shots=1,
            queries=FLAGS.queries,
            meta_batch_size=FLAGS.omniglot_tasks,
            seed=0,
        )
    return list(stream.take(count))


def _compiled(problem, name, factories, batches):
    """The configuration's learner, compiled as its name says (or the JAX reference)."""
    if name in JAX_WORKLOADS:
        return jax_reference.Reference(JAX_WORKLOADS[name], batches)
    keras.config.set_dtype_policy("mixed_bfloat16" if "bfloat16" in name else "float32")
    keras.utils.set_random_seed(0)
    learner = factories[name]()
    keras.config.set_dtype_policy("float32")
    loss = (
        "mse"
        if problem == "sinusoid"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=loss,
        jit_compile="XLA" in name,
        steps_per_execution=_per_execution(name),
    )
    return learner


def _per_execution(name):
    """The `steps_per_execution` of a configuration: "N steps per execution" in its name."""
    found = re.search(r"(\d+) steps per execution", name)
    return int(found.group(1)) if found else 1


def _dataset(batches):
    stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


def fit_seconds_per_step(learner, dataset, count, per_execution=1):
    """Seconds per meta-step between the first and the last batch end of one `fit`.

    Args:
        learner: A compiled learner.
        dataset: Its episode batches.
        count: Meta-steps of the `fit` (a multiple of `per_execution`).
        per_execution: The learner's `steps_per_execution`: batch ends come once per
            execution, so the first execution is not timed.
    """
    ends = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    learner.fit(dataset, steps_per_epoch=count, verbose=0, callbacks=[clock])
    return (ends[-1] - ends[0]) / (count - per_execution)


def _default_or_memory_option(name):
    """Whether a configuration's memory is measured: baselines, defaults, checkpointing."""
    return "," not in name or "gradient checkpointing" in name or name in JAX_WORKLOADS


def _peak_mebibytes():
    """This process's peak resident memory since it started (Linux's VmHWM).

    Not `ru_maxrss`: a process started by `fork` and `exec` inherits its parent's peak there.
    """
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _memory(problem, name):
    """Runs one configuration in this process and prints its memory as JSON."""
    factories, _ = _configurations(problem)
    batches = _batches(problem, 4)
    learner = _compiled(problem, name, factories, batches)
    before = _peak_mebibytes()
    if name in JAX_WORKLOADS:
        learner.run(4)
    else:
        learner.fit(_dataset(batches), steps_per_epoch=4 * _per_execution(name), verbose=0)
    peak = _peak_mebibytes()
    print(json.dumps({"before": before, "peak": peak}))  # noqa: T201 (read by the parent)


def _measure(problem):
    """The table rows of one problem."""
    factories, baselines = _configurations(problem)
    steps = 2 if FLAGS.smoke else FLAGS.steps or STEPS[problem]
    rounds = 1 if FLAGS.smoke else FLAGS.rounds
    if FLAGS.smoke:
        keep = ["MAML baseline", "MAML (second order)", "MAML, tasks vectorized, XLA"]
        keep += ["JAX MAML"] * (jax_reference is not None)
        factories = {name: factories[name] for name in keep}
        baselines = {name: baselines[name] for name in keep[1:]}
    if FLAGS.only:
        baselines = {name: reference for name, reference in baselines.items() if name in FLAGS.only}
        factories = {
            name: factory
            for name, factory in factories.items()
            if name in baselines or name in baselines.values()
        }
    batches = _batches(problem, 4)
    dataset = _dataset(batches)
    learners, first_step = {}, {}
    for name in factories:
        learners[name] = _compiled(problem, name, factories, batches)
        per_execution = _per_execution(name)
        start = time.perf_counter()
        if name in JAX_WORKLOADS:
            learners[name].run(1)
        else:
            learners[name].fit(dataset, steps_per_epoch=per_execution, verbose=0)
        first_step[name] = time.perf_counter() - start

    def turn(name):
        """Seconds per meta-step between the first and the last batch end of one `fit`."""
        per_execution = _per_execution(name)
        count = max(steps // per_execution, 2) * per_execution
        if name in JAX_WORKLOADS:
            return learners[name].seconds_per_step(count)
        return fit_seconds_per_step(learners[name], dataset, count, per_execution)

    rows = []
    for name, baseline in baselines.items():
        own, reference = [], []
        for _ in range(rounds):  # A B A B: the baseline's turns bracket this configuration's
            reference.append(turn(baseline))
            own.append(turn(name))
        seconds = float(np.median(own))
        ratios = [r / o for r, o in zip(reference, own, strict=True)]
        rows.append((name, baseline, seconds, float(np.median(reference)), ratios))
    memory = {
        name: json.loads(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f"--memory_of={problem}:{name}",
                    f"--queries={FLAGS.queries}",
                    f"--omniglot_tasks={FLAGS.omniglot_tasks}",
                ]
                + [f"--data_dir={FLAGS.data_dir}"] * bool(FLAGS.data_dir),
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for name in factories
        if name == "MAML (second order)" or not FLAGS.smoke and _default_or_memory_option(name)
    }
    tasks = 25 if problem == "sinusoid" else FLAGS.omniglot_tasks
    lines = [
        f"### {problem} (meta-batch {tasks}"
        + ("" if problem == "sinusoid" else f", {FLAGS.queries} queries per class")
        + f"; {steps} steps per turn, {rounds} rounds)",
        "",
        "| configuration | s per meta-step | meta-steps/s | tasks/s | first step (s) | "
        "peak RSS (MiB) | RSS before first step (MiB) | speed vs baseline (median of turns) | "
        "speed vs JAX |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    seconds_of = {row[0]: row[2] for row in rows}
    for name in factories:
        if name in baselines:
            _, baseline, seconds, _, ratios = next(row for row in rows if row[0] == name)
            ratio = f"{np.median(ratios):.2f} (vs {baseline})"
        else:
            baseline = name
            seconds = float(np.median([row[3] for row in rows if row[1] == name]))
            ratio = "1.00"
        # The JAX reference of this row's workload: the one timed against the same baseline.
        reference = next(
            (other for other in JAX_WORKLOADS if baselines.get(other) == baseline), None
        )
        versus_jax = f"{seconds_of[reference] / seconds:.2f}" if reference in seconds_of else "-"
        lines.append(
            f"| {name} | {seconds:.4f} | {1 / seconds:.1f} | {tasks / seconds:.0f} | "
            f"{first_step[name]:.1f} | {memory.get(name, {}).get('peak', float('nan')):.0f} | "
            f"{memory.get(name, {}).get('before', float('nan')):.0f} | {ratio} | {versus_jax} |"
        )
    return "\n".join(lines)


def main(argv):
    """Prints one Markdown table per problem."""
    del argv
    if FLAGS.memory_of:
        problem, name = FLAGS.memory_of.split(":", 1)
        _memory(problem, name)
        return
    problems = ["sinusoid"] if FLAGS.smoke else FLAGS.problems
    header = f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}"
    print("\n\n".join([header] + [_measure(problem) for problem in problems]))  # noqa: T201


if __name__ == "__main__":
    app.run(main)
