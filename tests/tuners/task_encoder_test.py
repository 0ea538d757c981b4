"""TaskEncoder: a set encoder (order of examples does not matter), saving, arguments."""

import keras
import numpy as np
import pytest

from tf_meta import tuners


def test_embedding_ignores_the_order_of_examples_and_reads_any_width():
    encoder = tuners.TaskEncoder()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.integers(0, 3, 30).astype(np.int32)
    order = rng.permutation(30)
    np.testing.assert_allclose(encoder.embed(x, y), encoder.embed(x[order], y[order]), atol=1e-6)
    wide = encoder.embed(rng.normal(size=(100, 40)), rng.normal(size=(100, 2)))
    assert wide.shape == (8,) and np.all(np.isfinite(wide))
    # A task differing only in the scale of its inputs gets a different embedding.
    assert not np.allclose(encoder.embed(x, y), encoder.embed(100 * x, y), atol=1e-3)


def test_keras_file_round_trip_gives_the_same_embeddings(tmp_path, families, family_history):
    encoder = tuners.TaskEncoder(embedding_size=4, units=16)
    encoder.fit_history(family_history.records(), steps=3, verbose=0)
    x, y = families.task("classes", seed=5)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["embedding_size"] == 4
    np.testing.assert_allclose(loaded.embed(x, y), encoder.embed(x, y), atol=1e-6)


@pytest.mark.parametrize(
    "name", ["embedding_size", "units", "examples", "input_columns", "target_columns"]
)
def test_sizes_must_be_positive_integers(name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        tuners.TaskEncoder(**{name: 0})


def test_fit_history_needs_two_searches(family_history):
    with pytest.raises(ValueError, match="at least 2"):
        tuners.TaskEncoder().fit_history(family_history.records()[:1])
