"""The KerasTuner tuner for regularized evolution."""

from tf_meta.tuners.evolution_oracle import EvolutionOracle
from tf_meta.tuners.meta_tuner import MetaTuner


class Evolution(MetaTuner):
    """A KerasTuner tuner searching by regularized evolution (see `EvolutionOracle`).

    Args:
        hypermodel: A `build(hp)` function or `keras_tuner.HyperModel` returning a compiled
            meta-learner.
        objective: The objective, e.g. `"val_accuracy"` (post-adaptation query accuracy
            on the validation episodes passed to `search`).
        max_trials: Number of trials.
        population_size: Trials in the population.
        tournament_size: Population members compared to choose a parent.
        seed: Seed of the search.
        hyperparameters: An optional search space given in advance.
        max_retries_per_trial: Retries of a crashed trial before it is marked failed.
        max_consecutive_failed_trials: Failed trials in a row that stop the search.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, distribution, ...).

    References:
        Real, Aggarwal, Huang and Le. Regularized Evolution for Image Classifier
        Architecture Search. AAAI 2019.
    """

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        max_trials: int = 10,
        population_size: int = 10,
        tournament_size: int = 3,
        seed: int | None = None,
        hyperparameters=None,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs,
    ):
        oracle = EvolutionOracle(
            objective=objective,
            max_trials=max_trials,
            population_size=population_size,
            tournament_size=tournament_size,
            seed=seed,
            hyperparameters=hyperparameters,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)
