"""ConfigurationPredictor: zero-shot configurations near each family's known optimum."""

import math
import random

import keras_tuner
import numpy as np
import pytest

from tf_meta import tuners


@pytest.fixture(scope="module")
def predictor(families, family_history):
    predictor = tuners.ConfigurationPredictor(families.space())
    history = predictor.fit(family_history.records(), epochs=60, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    return predictor


@pytest.mark.parametrize("family", ["small", "large", "classes"])
def test_prediction_is_near_the_family_optimum_and_beats_random(predictor, families, family):
    x, y = families.task(family, seed=999)
    values = predictor.predict(x, y)
    optimizer, rate = families.optima[family]
    assert values["optimizer"] == optimizer
    assert abs(math.log10(values["learning_rate"]) - math.log10(rate)) < 1.0, values
    space = families.space()
    rng = random.Random(0)
    random_scores = [
        objective_of(
            families,
            family,
            {hp.name: hp.random_sample(rng.randrange(2**31)) for hp in space.space},
        )
        for _ in range(200)
    ]
    assert objective_of(families, family, values) < np.percentile(random_scores, 10)


def objective_of(families, family, values):
    optimizer, rate = families.optima[family]
    return (math.log10(values["learning_rate"]) - math.log10(rate)) ** 2 + 2.0 * (
        values["optimizer"] != optimizer
    )


def test_scores_rank_the_optimum_above_a_poor_configuration(predictor, families):
    x, y = families.task("large", seed=999)
    good, poor = (
        {"optimizer": "adam", "learning_rate": 1e-4},
        {"optimizer": "sgd", "learning_rate": 0.5},
    )
    scores = predictor.scores(x, y, [good, poor])
    assert scores[0] < scores[1]


def test_a_space_with_a_new_hyperparameter_predicts_its_default(families, family_history):
    hp = families.space()
    hp.Int("layers", 1, 4, default=3)
    predictor = tuners.ConfigurationPredictor(hp, candidates=50)
    predictor.fit(family_history.records(), epochs=2, verbose=0)
    values = predictor.predict(*families.task("small", seed=999))
    assert set(values) == {"optimizer", "learning_rate", "layers"}


def test_a_saved_predictor_loads_and_predicts_the_same(predictor, families, tmp_path):
    path = str(tmp_path / "predictor")
    predictor.save(path)
    with pytest.raises(ValueError, match="exists"):
        predictor.save(path)
    restored = tuners.ConfigurationPredictor.load(path)
    x, y = families.task("classes", seed=999)
    candidates = [
        {"optimizer": "adam", "learning_rate": 1e-3},
        {"optimizer": "sgd", "learning_rate": 0.1},
    ]
    np.testing.assert_array_equal(
        restored.scores(x, y, candidates), predictor.scores(x, y, candidates)
    )
    assert restored.predict(x, y) == predictor.predict(x, y)
    assert restored.hyperparameters.get_config() == predictor.hyperparameters.get_config()
    with pytest.raises(ValueError, match="holds no saved predictor"):
        tuners.ConfigurationPredictor.load(str(tmp_path))


def test_a_predictor_with_an_encoder_saves_it_too(families, family_history, tmp_path):
    encoder = tuners.TaskEncoder(embedding_size=4, units=16)
    predictor = tuners.ConfigurationPredictor(families.space(), encoder=encoder)
    predictor.fit(family_history.records(), epochs=2, verbose=0)
    predictor.save(str(tmp_path / "predictor"))
    restored = tuners.ConfigurationPredictor.load(str(tmp_path / "predictor"))
    assert isinstance(restored.encoder, tuners.TaskEncoder)
    x, y = families.task("large", seed=999)
    candidates = [{"optimizer": "adam", "learning_rate": 1e-3}]
    np.testing.assert_array_equal(
        restored.scores(x, y, candidates), predictor.scores(x, y, candidates)
    )


def test_bad_arguments_are_refused(families):
    with pytest.raises(ValueError, match="`hyperparameters` is empty"):
        tuners.ConfigurationPredictor(keras_tuner.HyperParameters())
    with pytest.raises(ValueError, match="`candidates`"):
        tuners.ConfigurationPredictor(families.space(), candidates=-1)
    predictor = tuners.ConfigurationPredictor(families.space())
    with pytest.raises(ValueError, match="not trained"):
        predictor.predict(*families.task("small", seed=1))
    with pytest.raises(ValueError, match="not trained"):
        predictor.save("never_written")
    with pytest.raises(ValueError, match="`records` is empty"):
        predictor.fit([])
