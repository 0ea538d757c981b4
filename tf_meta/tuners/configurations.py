"""Configurations of past searches, carried into another search space."""

import numpy as np


def best_values(record: dict) -> dict:
    """The hyperparameter values of a record's best trial (by its objective's direction)."""
    sign = 1.0 if record["objective"]["direction"] == "min" else -1.0
    return min(record["trials"], key=lambda trial: sign * trial["score"])["values"]


def _valid(hyperparameter, value) -> bool:
    config = hyperparameter.get_config()
    if "values" in config and config["values"] is not None:
        return value in config["values"]
    if "min_value" in config:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and config["min_value"] <= value <= config["max_value"]
        )
    if "value" in config:  # Fixed
        return value == config["value"]
    return isinstance(value, bool)  # Boolean


def fit_to_space(values: dict, hyperparameters) -> dict:
    """Values from another search, made a valid configuration of `hyperparameters`.

    A hyperparameter the space does not have is dropped; one the values lack, or whose
    value lies outside its range or choices here, takes its default. Conditional
    hyperparameters that are inactive in the result are left out, as KerasTuner does.

    Args:
        values: A dict of hyperparameter values (a trial's `values`).
        hyperparameters: The `keras_tuner.HyperParameters` of the search.

    Returns:
        The active values of a configuration of `hyperparameters`.
    """
    space = hyperparameters.copy()
    chosen = {}
    for hyperparameter in space.space:
        value = values.get(hyperparameter.name)
        chosen[hyperparameter.name] = (
            value if _valid(hyperparameter, value) else hyperparameter.default
        )
    space.values = chosen
    space.ensure_active_values()
    return dict(space.values)


def encode(values: dict, hyperparameters) -> np.ndarray:
    """A configuration as a point of the unit cube: one coordinate per hyperparameter.

    Each coordinate is KerasTuner's own `value_to_prob` (log-scaled where the
    hyperparameter samples logarithmically, a bin centre for a choice), the same encoding
    its Bayesian optimization uses; values are fitted to the space first (`fit_to_space`),
    and an inactive hyperparameter sits at its default.

    Args:
        values: A dict of hyperparameter values.
        hyperparameters: The `keras_tuner.HyperParameters` defining the coordinates.

    Returns:
        A float32 vector with one entry per hyperparameter of the space.
    """
    fitted = fit_to_space(values, hyperparameters)
    return np.array(
        [
            hyperparameter.value_to_prob(fitted.get(hyperparameter.name, hyperparameter.default))
            for hyperparameter in hyperparameters.space
        ],
        np.float32,
    )
