"""Regularized (aging) evolution as a KerasTuner oracle."""

import random

import keras_tuner
from keras_tuner.engine import trial as trial_module

from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.checks import check_search_space


class EvolutionOracle(keras_tuner.Oracle):
    """Regularized evolution (Real et al. 2019) over any KerasTuner search space.

    The first `population_size` trials are random. After that, each trial takes the
    `population_size` most recently completed trials as the population (so the oldest
    member leaves as a new one arrives: aging), draws `tournament_size` of them at
    random, and mutates the best of those: one active hyperparameter, chosen at random,
    gets a new value from its own distribution. Discrete and continuous, conditional or
    not, every KerasTuner hyperparameter type works. Randomness comes from `seed`.

    Args:
        objective: The KerasTuner objective (e.g. `"val_loss"`).
        max_trials: Number of trials.
        population_size: Trials in the population.
        tournament_size: Population members compared to choose a parent.
        seed: Seed of every random choice.
        hyperparameters: An optional search space given in advance.
        **kwargs: Other `keras_tuner.Oracle` arguments.

    Raises:
        ValueError: If a size or `max_trials` is not a positive integer, the population is
            smaller than the tournament, or the given search space is empty.

    References:
        Real, Aggarwal, Huang and Le. Regularized Evolution for Image Classifier
        Architecture Search. AAAI 2019.
    """

    def __init__(
        self,
        objective=None,
        max_trials: int = 10,
        population_size: int = 10,
        tournament_size: int = 3,
        seed: int | None = None,
        hyperparameters=None,
        **kwargs,
    ):
        for name, value in (
            ("max_trials", max_trials),
            ("population_size", population_size),
            ("tournament_size", tournament_size),
        ):
            check_positive_integer(name, value)
        if population_size < tournament_size:
            raise ValueError(
                f"`population_size`={population_size} is smaller than `tournament_size`="
                f"{tournament_size}."
            )
        check_search_space(hyperparameters)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.population_size = population_size
        self.tournament_size = tournament_size

    def _population(self):
        completed = [
            self.trials[trial_id]
            for trial_id in self.end_order
            if self.trials[trial_id].status == trial_module.TrialStatus.COMPLETED
        ]
        return completed[-self.population_size :]

    def _mutate(self, parent, rng: random.Random):
        hyperparameters = self.hyperparameters.copy()
        hyperparameters.values = dict(parent.hyperparameters.values)
        active = [hp for hp in hyperparameters.space if hyperparameters.is_active(hp)]
        chosen = rng.choice(active)
        old = hyperparameters.values.get(chosen.name)
        for _ in range(self._max_collisions):
            value = chosen.random_sample(rng.randrange(2**31))
            if value != old:
                break
        hyperparameters.values[chosen.name] = value
        hyperparameters.ensure_active_values()
        return hyperparameters.values

    def populate_space(self, trial_id):
        """A random configuration, or the mutated winner of a tournament."""
        population = self._population()
        if len(population) < self.population_size:
            values = self._random_values()
        else:
            rng = random.Random(self._seed_state)
            self._seed_state += 1
            contestants = rng.sample(population, self.tournament_size)
            sign = 1 if self.objective.direction == "max" else -1
            parent = max(contestants, key=lambda trial: sign * trial.score)
            values = None
            for _ in range(self._max_collisions):
                candidate = self._mutate(parent, rng)
                if not self._duplicate(candidate):
                    values = candidate
                    break
            if values is None:
                values = self._random_values()
        if values is None:
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        return {"status": trial_module.TrialStatus.RUNNING, "values": values}

    def get_state(self):
        """The oracle's state, with its sizes (for resuming)."""
        state = super().get_state()
        state.update(population_size=self.population_size, tournament_size=self.tournament_size)
        return state

    def set_state(self, state):
        """Restores the oracle's state."""
        super().set_state(state)
        self.population_size = state["population_size"]
        self.tournament_size = state["tournament_size"]
