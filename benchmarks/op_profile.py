"""Where a meta-step's time goes: TensorFlow's profiler, summed by op type, for two setups.

Runs `--steps` meta-steps of each configuration of `throughput.py` (same problems, episodes
and flags) under `tf.profiler`, then reads the trace (XPlane) and prints, per op type, the
time and count of each, sorted by the difference between the two. This is the profile behind
the explanations in RESULTS.md, e.g. that differentiating `tf.map_fn` from outside left max
pooling's gradient on TensorFlow's own kernel instead of oneDNN's.

    TF_META_DATA_DIR=../shared/data python benchmarks/op_profile.py --problems=omniglot
        --configuration="MAML baseline" --configuration="MAML (second order)"
"""

import collections
import glob
import os
import tempfile
import time

import tensorflow as tf
import throughput
from absl import app, flags
from tensorflow.tsl.profiler.protobuf import xplane_pb2

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "configuration",
    ["MAML baseline", "MAML (second order)"],
    "A configuration name of throughput.py; given twice, the two to profile and compare "
    '(names may hold commas, e.g. "MAML, bfloat16").',
)
flags.DEFINE_integer("top", 20, "Op types to print.")


def _op_times(logdir):
    """{op type: (seconds, count)} summed over the host's threads in a profile directory."""
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as trace:
        space.ParseFromString(trace.read())
    seconds, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name:  # TensorFlow ops are named "node:OpType"
                    op_type = name.rsplit(":", 1)[1]
                    seconds[op_type] += event.duration_ps / 1e12
                    counts[op_type] += 1
    return seconds, counts


def _profile(problem, name, steps, directory):
    """Wall seconds and op times of `steps` meta-steps after two warm-up steps."""
    factories, _ = throughput._configurations(problem)
    learner = throughput._compiled(problem, name, factories)
    dataset = throughput._dataset(throughput._batches(problem, 4))
    learner.fit(dataset, steps_per_epoch=2, verbose=0)
    logdir = os.path.join(directory, str(len(os.listdir(directory))))
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    learner.fit(dataset, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return wall, _op_times(logdir)


def main(argv):
    """Prints the op-type table of the two configurations."""
    del argv
    problem = "sinusoid" if FLAGS.smoke else FLAGS.problems[0]
    steps = 2 if FLAGS.smoke else FLAGS.steps or 3
    if len(FLAGS.configuration) != 2:
        raise app.UsageError(f"--configuration must be given twice, got {FLAGS.configuration}")
    first, second = FLAGS.configuration
    with tempfile.TemporaryDirectory() as directory:
        (wall_a, (seconds_a, counts_a)), (wall_b, (seconds_b, counts_b)) = (
            _profile(problem, name, steps, directory) for name in (first, second)
        )
    op_types = sorted(
        set(seconds_a) | set(seconds_b), key=lambda op: -abs(seconds_b[op] - seconds_a[op])
    )
    # "Run" and "Process" are the executor's own events around the ops; they show the wall time.
    lines = [
        f"### {problem}: {steps} meta-steps, {first}: {wall_a:.2f} s, {second}: {wall_b:.2f} s",
        "",
        f"| op type | {first} (s) | count | {second} (s) | count | difference (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for op_type in [op for op in op_types if not op.strip().startswith("__inference")][: FLAGS.top]:
        lines.append(
            f"| {op_type} | {seconds_a[op_type]:.3f} | {counts_a[op_type]} | "
            f"{seconds_b[op_type]:.3f} | {counts_b[op_type]} | "
            f"{seconds_b[op_type] - seconds_a[op_type]:+.3f} |"
        )
    print("\n".join(lines))  # noqa: T201 (a benchmark script's report)


if __name__ == "__main__":
    app.run(main)
