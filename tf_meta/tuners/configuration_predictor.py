"""Zero-shot configurations: a model of past searches that proposes one for a new task."""

import json
import os
import random

import keras
import keras_tuner
import numpy as np

from tf_meta import backup
from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.configurations import best_values, encode, fit_to_space
from tf_meta.tuners.meta_features import describe


def _quantiles(record: dict) -> np.ndarray:
    """Each trial's rank in its search, from 0 (the best) to 1 (the worst)."""
    sign = 1.0 if record["objective"]["direction"] == "min" else -1.0
    scores = sign * np.array([trial["score"] for trial in record["trials"]])
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return ranks / max(len(scores) - 1, 1)


class ConfigurationPredictor:
    """Predicts a good configuration for a new task from a history of searches.

    A surrogate network reads a task's description (its meta-features, or its `TaskEncoder`
    embedding) and a configuration (KerasTuner's unit encoding, `configurations.encode`),
    and predicts the configuration's rank among its task's trials (0 best, 1 worst; ranks
    make searches of different objectives and scales comparable). It learns from every
    trial of the history, not only the best ones. `predict(x, y)` scores candidate
    configurations for the new task and returns the best, a configuration without a single
    trial on the new task. The candidates are a portfolio: each recorded search's best
    configuration, carried into this space (and `candidates` random ones if asked). Taking
    the argmin over every configuration the history tried instead picked configurations
    whose predicted rank was far too optimistic: in `benchmarks/transfer_tuning.py` it chose
    diverging learning rates on 2 of 8 held-out tasks, where the portfolio beat the median
    random configuration on 6. Give it to `TransferOracle(predictor=...)` to make it the
    first trial of a Bayesian or evolutionary search.

    Args:
        hyperparameters: The `keras_tuner.HyperParameters` to predict in. Hyperparameters
            of the history that it lacks are ignored; ones the history lacks sit at their
            defaults there.
        encoder: An optional trained `TaskEncoder` describing tasks; by default the
            meta-features.
        units: Width of the surrogate's two hidden layers.
        candidates: Random configurations scored besides the portfolio (0 or more).
        seed: Seed of the surrogate's initialization and of the random candidates.

    Raises:
        ValueError: If `hyperparameters` is empty or a size is not a positive integer.

    Example:
        predictor = ConfigurationPredictor(space)
        predictor.fit(SearchHistory("history").records())
        values = predictor.predict(x_new, y_new)  # {"learning_rate": ..., "optimizer": ...}
        predictor.save("predictor")  # ConfigurationPredictor.load("predictor") in another process

    References:
        Feurer, Springenberg and Hutter. Initializing Bayesian Hyperparameter Optimization
        via Meta-Learning. AAAI 2015.
        Perrone, Jenatton, Seeger and Archambeau. Scalable Hyperparameter Transfer
        Learning. NeurIPS 2018.
    """

    def __init__(
        self,
        hyperparameters,
        encoder=None,
        units: int = 64,
        candidates: int = 0,
        seed: int = 0,
    ):
        if hyperparameters is None or not hyperparameters.space:
            raise ValueError("`hyperparameters` is empty: there is nothing to predict.")
        check_positive_integer("units", units)
        check_positive_integer("candidates", candidates, minimum=0)
        self.hyperparameters = hyperparameters
        self.encoder = encoder
        self.units = units
        self.candidates = candidates
        self.seed = seed
        self.model = None
        self._configurations = []

    def fit(self, records, epochs: int = 200, verbose="auto"):
        """Trains the surrogate on every trial of `records`.

        Args:
            records: `SearchHistory.records()`, at least one.
            epochs: Training epochs of the surrogate.
            verbose: `fit`'s verbosity (a progress bar by default).

        Returns:
            The `keras.callbacks.History` of `fit`.

        Raises:
            ValueError: If `records` is empty.
        """
        if not records:
            raise ValueError("`records` is empty: there is nothing to learn from.")
        descriptions, configurations, targets = [], [], []
        portfolio = []
        for record in records:
            description = describe(record["x"], record["y"], self.encoder)
            for trial, quantile in zip(record["trials"], _quantiles(record), strict=True):
                values = fit_to_space(trial["values"], self.hyperparameters)
                descriptions.append(description)
                configurations.append(encode(values, self.hyperparameters))
                targets.append(quantile)
            best = fit_to_space(best_values(record), self.hyperparameters)
            if best not in portfolio:
                portfolio.append(best)
        space = self.hyperparameters
        rng = random.Random(self.seed)
        random_values = [
            fit_to_space(
                {hp.name: hp.random_sample(rng.randrange(2**31)) for hp in space.space}, space
            )
            for _ in range(self.candidates)
        ]
        self._configurations = portfolio + random_values
        keras.utils.set_random_seed(self.seed)
        normalization = keras.layers.Normalization()
        normalization.adapt(np.array(descriptions, np.float32))
        description_input = keras.Input((len(descriptions[0]),))
        configuration_input = keras.Input((len(configurations[0]),))
        hidden = keras.layers.Concatenate()([normalization(description_input), configuration_input])
        for _ in range(2):
            hidden = keras.layers.Dense(self.units, activation="relu")(hidden)
        output = keras.layers.Dense(1, activation="sigmoid")(hidden)
        self.model = keras.Model([description_input, configuration_input], output)
        self.model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        return self.model.fit(
            [np.array(descriptions, np.float32), np.array(configurations)],
            np.array(targets, np.float32),
            batch_size=64,
            epochs=epochs,
            verbose=verbose,
        )

    def scores(self, x, y, configurations: list[dict]) -> np.ndarray:
        """Predicted ranks (0 best, 1 worst) of configurations on the task `(x, y)`."""
        if self.model is None:
            raise ValueError("The predictor is not trained: call `fit` first.")
        description = describe(x, y, self.encoder).astype(np.float32)
        encoded = np.stack([encode(values, self.hyperparameters) for values in configurations])
        descriptions = np.repeat(description[None], len(encoded), axis=0)
        return self.model.predict([descriptions, encoded], verbose=0, batch_size=1024)[:, 0]

    def predict(self, x, y) -> dict:
        """The configuration predicted best for the task `(x, y)`.

        Args:
            x: A sample of the task's inputs (at least 4 examples).
            y: Its targets.

        Returns:
            A dict of hyperparameter values, a valid configuration of `hyperparameters`.

        Raises:
            ValueError: If the predictor is not trained, or `(x, y)` is not a task.
        """
        scores = self.scores(x, y, self._configurations)
        return dict(self._configurations[int(np.argmin(scores))])

    def save(self, path: str) -> None:
        """Writes the trained predictor to the directory `path`, whole or not at all.

        The directory holds `predictor.json` (the search space as KerasTuner's config, the
        constructor's arguments and the candidate configurations, human-readable),
        `surrogate.keras`, and `encoder.keras` when the predictor describes tasks with a
        `TaskEncoder`. It is written beside `path` and renamed into place
        (`tf_meta.backup.write_directory_atomically`).

        Raises:
            ValueError: If the predictor is not trained, or `path` exists.
        """
        if self.model is None:
            raise ValueError("The predictor is not trained: call `fit` before `save`.")
        if os.path.exists(path):
            raise ValueError(f"`path` {path!r} exists; a predictor is saved to a new directory.")
        description = {
            "hyperparameters": self.hyperparameters.get_config(),
            "units": self.units,
            "candidates": self.candidates,
            "seed": self.seed,
            "configurations": self._configurations,
        }

        def write(directory):
            with open(os.path.join(directory, "predictor.json"), "w") as file:
                json.dump(description, file, indent=1)
            self.model.save(os.path.join(directory, "surrogate.keras"))
            if self.encoder is not None:
                self.encoder.save(os.path.join(directory, "encoder.keras"))

        backup.write_directory_atomically(path, write)

    @classmethod
    def load(cls, path: str) -> "ConfigurationPredictor":
        """The predictor `save` wrote to `path`, ready to `predict`.

        Raises:
            ValueError: If `path` holds no saved predictor.
        """
        description_path = os.path.join(path, "predictor.json")
        if not os.path.isfile(description_path):
            raise ValueError(f"`path` {path!r} holds no saved predictor (no predictor.json).")
        with open(description_path) as file:
            description = json.load(file)
        encoder_path = os.path.join(path, "encoder.keras")
        predictor = cls(
            keras_tuner.HyperParameters.from_config(description["hyperparameters"]),
            encoder=keras.saving.load_model(encoder_path) if os.path.exists(encoder_path) else None,
            units=description["units"],
            candidates=description["candidates"],
            seed=description["seed"],
        )
        predictor.model = keras.saving.load_model(os.path.join(path, "surrogate.keras"))
        predictor._configurations = description["configurations"]
        return predictor
