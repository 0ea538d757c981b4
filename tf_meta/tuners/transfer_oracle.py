"""Warm-started search: start where similar earlier tasks ended, then search as usual."""

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module

from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.checks import check_search_space
from tf_meta.tuners.configurations import best_values, fit_to_space
from tf_meta.tuners.evolution_oracle import EvolutionOracle
from tf_meta.tuners.meta_features import describe
from tf_meta.tuners.search_history import SearchHistory

SEARCHES = ("bayesian", "evolution")
# The bookkeeping the continuing search reads and updates: it is this oracle's own.
_SHARED = (
    "trials",
    "ongoing_trials",
    "start_order",
    "end_order",
    "hyperparameters",
    "_tried_so_far",
    "_id_to_hash",
    "_seed_state",
)


class TransferOracle(keras_tuner.Oracle):
    """A KerasTuner oracle warm-started from the most similar tasks of a search history.

    The first trials are the best configurations of the `neighbours` recorded tasks most
    similar to the new one, nearest first (after the `predictor`'s configuration, if one is
    given), each carried into this search space (`configurations.fit_to_space`: unknown
    hyperparameters are dropped, missing ones take their defaults; a configuration already
    proposed is not repeated). Then the search continues with KerasTuner's Bayesian
    optimization (`search="bayesian"`, whose Gaussian process then starts from the warm
    trials instead of random ones) or tf_meta's regularized evolution (`"evolution"`, whose
    first population they join). Similarity is the Euclidean distance between
    standardized meta-features (`meta_features`), or between `encoder` embeddings when a
    trained `TaskEncoder` is given. It is an ordinary oracle: any KerasTuner tuner
    (`MetaTuner` included) drives it, with resuming and distributed search.

    Args:
        history: A `SearchHistory`, or its `records()`.
        x: A sample of the new task's inputs (at least 4 examples).
        y: Its targets: integer labels, or float regression targets.
        objective: The KerasTuner objective.
        max_trials: Number of trials, the warm ones included.
        neighbours: Recorded tasks whose best configurations start the search.
        encoder: An optional trained `TaskEncoder`; by default meta-features compare tasks.
        predictor: An optional trained `ConfigurationPredictor`, whose configuration is
            the first trial.
        search: How the search continues, one of `SEARCHES`.
        seed: Seed of the continuing search.
        hyperparameters: An optional search space given in advance.
        **kwargs: Other `keras_tuner.Oracle` arguments.

    Raises:
        ValueError: If the history is empty, `neighbours` or `max_trials` is not a positive
            integer, `search` is unknown, the search space is empty, or `(x, y)` is not a
            task.

    Example:
        oracle = TransferOracle(SearchHistory("history"), x_new, y_new,
                                objective="val_loss", max_trials=20)
        tuner = MetaTuner(oracle, hypermodel=build, directory="search")
        tuner.search(train, validation_data=validation, epochs=3)

    References:
        Feurer, Springenberg and Hutter. Initializing Bayesian Hyperparameter Optimization
        via Meta-Learning. AAAI 2015.
    """

    def __init__(
        self,
        history,
        x,
        y,
        objective=None,
        max_trials: int = 10,
        neighbours: int = 3,
        encoder=None,
        predictor=None,
        search: str = "bayesian",
        seed: int | None = None,
        hyperparameters=None,
        **kwargs,
    ):
        check_positive_integer("max_trials", max_trials)
        check_positive_integer("neighbours", neighbours)
        check_search_space(hyperparameters)
        if search not in SEARCHES:
            raise ValueError(f"`search` must be one of {SEARCHES}; received {search!r}.")
        records = history.records() if isinstance(history, SearchHistory) else list(history)
        if not records:
            raise ValueError("`history` holds no search to start from.")
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.neighbours = neighbours
        self.encoder = encoder
        self.predictor = predictor
        self.records = records
        self.task = (np.asarray(x), np.asarray(y))
        self._distances = self._task_distances()
        search_class = (
            keras_tuner.oracles.BayesianOptimizationOracle
            if search == "bayesian"
            else EvolutionOracle
        )
        self.search = search_class(
            objective=objective,
            max_trials=max_trials,
            seed=self.seed,
            hyperparameters=hyperparameters,
        )
        self.warm_start = None

    def _task_distances(self) -> np.ndarray:
        vectors = np.stack(
            [describe(record["x"], record["y"], self.encoder) for record in self.records]
            + [describe(*self.task, self.encoder)]
        )
        if self.encoder is None:
            scale = vectors.std(axis=0)
            vectors = (vectors - vectors.mean(axis=0)) / np.where(scale > 1e-9, scale, np.inf)
        return np.sqrt(np.sum((vectors[:-1] - vectors[-1]) ** 2, axis=1))

    def ranking(self) -> list[tuple[str, float]]:
        """Recorded tasks by similarity to the new one: `(name, distance)`, nearest first."""
        order = np.argsort(self._distances, kind="stable")
        return [(self.records[index]["name"], float(self._distances[index])) for index in order]

    def _warm_values(self) -> list[dict]:
        proposals = [] if self.predictor is None else [self.predictor.predict(*self.task)]
        names = [name for name, _ in self.ranking()[: self.neighbours]]
        by_name = {record["name"]: record for record in self.records}
        proposals += [best_values(by_name[name]) for name in names]
        unique = []
        for values in proposals:
            values = fit_to_space(values, self.hyperparameters)
            if values not in unique:
                unique.append(values)
        return unique

    def populate_space(self, trial_id):
        """A warm-start configuration while any is left, then the continuing search's."""
        if self.warm_start is None:
            self.warm_start = self._warm_values()
        started = len(self.start_order)
        if started < len(self.warm_start):
            return {"status": trial_module.TrialStatus.RUNNING, "values": self.warm_start[started]}
        for name in _SHARED:
            setattr(self.search, name, getattr(self, name))
        response = self.search.populate_space(trial_id)
        self._seed_state = self.search._seed_state
        return response

    def get_state(self):
        """The oracle's state with its warm start (for resuming)."""
        state = super().get_state()
        state.update(warm_start=self.warm_start, neighbours=self.neighbours)
        return state

    def set_state(self, state):
        """Restores the oracle's state."""
        super().set_state(state)
        self.warm_start = state["warm_start"]
        self.neighbours = state["neighbours"]
