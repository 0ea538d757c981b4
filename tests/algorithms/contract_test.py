"""The contract in MetaLearner's docstring is enough to write a learner."""

import re
import textwrap

import keras
import numpy as np
import tensorflow as tf

import tf_meta


def docstring_learner():
    """The `OneStep` learner of `MetaLearner`'s docstring example, executed as written."""
    example = re.search(r"```python\n(.*?)```", tf_meta.MetaLearner.__doc__, re.DOTALL)
    namespace = {"tf_meta": tf_meta, "tf": tf, "keras": keras}
    exec(textwrap.dedent(example.group(1)), namespace)  # noqa: S102
    return namespace["OneStep"]


def test_the_docstring_learner_steps_exactly_like_maml():
    one_step = docstring_learner()
    x, y = next(iter(tf_meta.data.sinusoid(meta_batch_size=4, seed=0)))
    updates = []
    for make in (
        lambda network: one_step(network),
        lambda network: tf_meta.MAML(network, inner_learning_rate=0.1, inner_steps=1),
    ):
        keras.utils.set_random_seed(0)
        learner = make(tf_meta.models.mlp())
        learner.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        learner(x)
        before = [w.numpy() for w in learner.trainable_variables]
        learner.train_on_batch(x, y)
        updates.append(
            [w.numpy() - b for w, b in zip(learner.trainable_variables, before, strict=True)]
        )
        # Evaluation and adaptation come with the contract too.
        assert learner.predict(x, verbose=0).shape == (4, 10, 1)
        assert len(learner.adapt(x["support_x"][0], x["support_y"][0])) == 6
    assert max(np.abs(u).max() for u in updates[0]) > 1e-4
    for ours, maml in zip(*updates, strict=True):
        np.testing.assert_allclose(ours, maml, rtol=1e-5, atol=1e-7)
