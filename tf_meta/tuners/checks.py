"""Argument checks shared by the tuners, run before any trial."""

import keras


def check_search_space(hyperparameters) -> None:
    """Raises a ValueError if a search space given in advance is empty."""
    if hyperparameters is not None and not hyperparameters.space:
        raise ValueError("The search space `hyperparameters` is empty: nothing to search.")


def _metric_names(model: keras.Model) -> set[str]:
    names = {"loss"}
    for metric in (model.get_compile_config() or {}).get("metrics") or []:
        if isinstance(metric, str):
            names.add(metric)
        elif isinstance(metric, dict):
            names.add(metric.get("config", {}).get("name", ""))
    return names


def check_objective(tuner) -> None:
    """Raises a ValueError if the tuner's objective is not a value the learner reports.

    The hypermodel is built once with default hyperparameters, and the objective must be
    `loss`, a compiled metric, or either with the `val_` prefix.
    """
    objective = tuner.oracle.objective
    if tuner.hypermodel is None or objective.name == "default_objective":
        return
    model = tuner.hypermodel.build(tuner.oracle.hyperparameters.copy())
    reported = _metric_names(model)
    wanted = getattr(objective, "name_to_direction", {objective.name: None})
    for name in wanted:
        if name.removeprefix("val_") not in reported:
            raise ValueError(
                f"The objective {name!r} is not reported by the learner, which reports "
                f"{sorted(reported)} (and their `val_` versions on validation data)."
            )
