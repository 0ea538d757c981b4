"""Checks that each input form traces the training step once and XLA compiles it once.

XLA's compilations are counted as the entries it writes to a persistent cache directory
(`--tf_xla_persistent_cache_directory`, one entry per compiled cluster), which must be set
before TensorFlow starts: the counting runs in a fresh process.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import pytest

import tf_meta

# Two fits of two epochs on each input form; prints, per form, the traces of the training
# step, the distinct input shapes they saw, and the XLA compilations of each fit.
_COUNT = textwrap.dedent(
    """
    import json, os, sys
    import keras, numpy as np, tensorflow as tf
    import tf_meta

    cache = os.environ["TF_XLA_FLAGS"].split("=", 1)[1]
    options = json.loads(sys.argv[1])
    if options.pop("mixed_bfloat16", False):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")


    def dataset():
        return tf_meta.data.sinusoid(meta_batch_size=4, seed=0)


    def generator():
        for x, y in dataset():
            yield {key: value.numpy() for key, value in x.items()}, y.numpy()


    def arrays():
        x, y = next(iter(tf_meta.data.sinusoid(meta_batch_size=16, seed=1)))
        return {key: value.numpy() for key, value in x.items()}, y.numpy()


    def images():
        rng = np.random.default_rng(0)
        pixels = rng.uniform(size=(40, 4, 4, 1)).astype("float32")
        return tf_meta.data.episodes(
            (pixels, np.arange(40) % 8), ways=3, shots=1, queries=2, meta_batch_size=4
        )


    forms = {"dataset": dataset, "generator": generator, "arrays": arrays, "episodes": images}
    forms = {name: forms[name] for name in options.pop("forms", forms)}
    counts = {}
    for name, make in forms.items():
        keras.utils.set_random_seed(0)
        classify = name == "episodes"
        network = keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(8, "relu"), keras.layers.Dense(3)]
            if classify
            else [keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
        )
        learner = tf_meta.MAML(
            network, inner_learning_rate=0.01, vectorize_tasks=options["vectorize_tasks"]
        )
        learner.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if classify
            else "mse",
            jit_compile=options["jit_compile"],
            steps_per_execution=options["steps_per_execution"],
        )
        traces = []
        step = learner.train_step
        learner.train_step = lambda data, step=step: (
            traces.append(str(tf.nest.map_structure(lambda t: t.shape, data))),
            step(data),
        )[1]
        fits = []
        for _ in range(2):
            before = len(os.listdir(cache))
            if name == "arrays":
                x, y = make()
                learner.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
            else:
                learner.fit(make(), steps_per_epoch=4, epochs=2, verbose=0)
            fits.append(len(os.listdir(cache)) - before)
        counts[name] = {
            "traces": len(traces), "signatures": len(set(traces)), "compilations": fits
        }
    print(json.dumps(counts))
    """
)


def _counts(tmp_path, **options) -> dict:
    """Runs `_COUNT` with `options` in a fresh process and returns its counts."""
    cache = tmp_path / "xla"
    cache.mkdir()
    environment = {
        **os.environ,
        "TF_XLA_FLAGS": f"--tf_xla_persistent_cache_directory={cache}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    result = subprocess.run(
        [sys.executable, "-c", _COUNT, json.dumps(options)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_once(counts, jit_compile) -> None:
    for form, count in counts.items():
        assert count["traces"] == count["signatures"] == 1, (form, count)
        # The first fit compiles the step once; the second reuses it.
        assert count["compilations"] == ([1, 0] if jit_compile else [0, 0]), (form, count)


def test_vectorized_tasks_under_xla_compile_once(tmp_path):
    """Since the learner-core redesign until this test, XLA compiled this step for every
    batch (0.5 meta-steps/s): each task's loss was reduced inside `tf.vectorized_map` and
    differentiated from outside it."""
    options = {"jit_compile": True, "vectorize_tasks": True, "steps_per_execution": 2}
    # The slow test below runs every input form; CI, the two of README's examples.
    counts = _counts(tmp_path, **options, forms=["generator", "dataset"])
    assert set(counts) == {"generator", "dataset"}
    _assert_once(counts, jit_compile=True)


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("vectorize_tasks", [False, True])
@pytest.mark.parametrize("steps_per_execution", [1, 2])
@pytest.mark.parametrize("mixed_bfloat16", [False, True])
def test_every_option_combination_traces_and_compiles_once(
    tmp_path, jit_compile, vectorize_tasks, steps_per_execution, mixed_bfloat16
):
    counts = _counts(
        tmp_path,
        jit_compile=jit_compile,
        vectorize_tasks=vectorize_tasks,
        steps_per_execution=steps_per_execution,
        mixed_bfloat16=mixed_bfloat16,
    )
    _assert_once(counts, jit_compile)


def test_a_retrace_for_new_shapes_warns_once_naming_the_key():
    learner = tf_meta.MAML(tf_meta.models.mlp(hidden_units=(8,)), inner_learning_rate=0.01)
    learner.compile(optimizer="adam", loss="mse")
    learner.fit(tf_meta.data.sinusoid(meta_batch_size=4), steps_per_epoch=1, verbose=0)
    with pytest.warns(
        UserWarning, match=r": query_x \(4, 10, 1\) -> \(None, 10, 1\), .*query_y \(4"
    ) as caught:
        learner.fit(tf_meta.data.sinusoid(meta_batch_size=3), steps_per_epoch=1, verbose=0)
        learner.fit(tf_meta.data.sinusoid(meta_batch_size=2), steps_per_epoch=1, verbose=0)
    assert sum("traced again" in str(warning.message) for warning in caught) == 1


def test_the_same_shapes_in_a_new_fit_do_not_warn(recwarn):
    learner = tf_meta.MAML(tf_meta.models.mlp(hidden_units=(8,)), inner_learning_rate=0.01)
    learner.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    for _ in range(2):
        learner.fit(tf_meta.data.sinusoid(meta_batch_size=4), steps_per_epoch=1, verbose=0)
    assert not [w for w in recwarn if "traced again" in str(w.message)]


@pytest.mark.parametrize("reduction, warns", [("sum_over_batch_size", False), ("sum", True)])
def test_the_step_xla_recompiles_at_every_batch_warns(reduction, warns):
    # A summed loss takes the whole-batch step, which XLA compiles again at every batch
    # when the tasks are vectorized (measured in the issue: 0.5 meta-steps/s).
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, vectorize_tasks=True)
    learner.compile(
        optimizer="sgd", loss=keras.losses.MeanSquaredError(reduction=reduction), jit_compile=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = tf_meta.data.sinusoid(meta_batch_size=2, seed=0)
        learner.fit(stream, steps_per_epoch=1, verbose=0)
    messages = [str(warning.message) for warning in caught]
    assert any("compile the training step again" in m for m in messages) == warns, messages
