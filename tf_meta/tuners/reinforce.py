"""The KerasTuner tuner for the REINFORCE controller."""

from tf_meta.tuners.meta_tuner import MetaTuner
from tf_meta.tuners.reinforce_oracle import ReinforceOracle


class Reinforce(MetaTuner):
    """A KerasTuner tuner searching with a REINFORCE controller (see `ReinforceOracle`).

    Args:
        hypermodel: A `build(hp)` function or `keras_tuner.HyperModel` returning a compiled
            meta-learner.
        objective: The objective, e.g. `"val_accuracy"`.
        max_trials: Number of trials.
        learning_rate: Step size of the controller.
        baseline_decay: Decay of the moving-average baseline.
        bins: Categories for continuous or large hyperparameters.
        seed: Seed of the search.
        hyperparameters: An optional search space given in advance.
        max_retries_per_trial: Retries of a crashed trial before it is marked failed.
        max_consecutive_failed_trials: Failed trials in a row that stop the search.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, distribution, ...).

    References:
        Zoph and Le. Neural Architecture Search with Reinforcement Learning. ICLR 2017.
    """

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        max_trials: int = 10,
        learning_rate: float = 1.0,
        baseline_decay: float = 0.8,
        bins: int = 8,
        seed: int | None = None,
        hyperparameters=None,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs,
    ):
        oracle = ReinforceOracle(
            objective=objective,
            max_trials=max_trials,
            learning_rate=learning_rate,
            baseline_decay=baseline_decay,
            bins=bins,
            seed=seed,
            hyperparameters=hyperparameters,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)
