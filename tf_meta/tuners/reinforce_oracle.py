"""A REINFORCE controller as a KerasTuner oracle."""

import keras_tuner
import numpy as np
import tensorflow as tf
from keras_tuner.engine import hyperparameters as hp_types
from keras_tuner.engine import trial as trial_module

from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.checks import check_search_space


class ReinforceOracle(keras_tuner.Oracle):
    """Policy-gradient search: a controller learns a distribution over configurations.

    Every hyperparameter is discretized into categories (each value of a `Choice` or a
    `Boolean`, each integer of a small `Int` range, else `bins` equal-probability bins of
    its own distribution, represented by their centers). The controller holds one vector
    of logits per hyperparameter (a factorized policy; Zoph & Le use an RNN so that choices
    can depend on earlier ones), samples each trial's configuration with stateless seeds,
    and after each completed trial takes a REINFORCE gradient step on
    `advantage * log pi(configuration)`, where the reward is the objective (negated when it
    is minimized, and the worst reward seen for a failed trial, so that the controller
    learns to avoid configurations that crash or diverge), the baseline is an exponential
    moving average of rewards, and the
    advantage is divided by the running standard deviation of rewards, so the step does
    not depend on the objective's scale.

    Args:
        objective: The KerasTuner objective.
        max_trials: Number of trials.
        learning_rate: Step size of the controller's gradient ascent.
        baseline_decay: Decay of the moving-average baseline.
        bins: Categories for continuous or large hyperparameters.
        seed: Seed of the sampling.
        hyperparameters: An optional search space given in advance.
        **kwargs: Other `keras_tuner.Oracle` arguments.

    Raises:
        ValueError: If `max_trials` or `bins` is not a positive integer, `learning_rate`
            is not positive, `baseline_decay` is not in [0, 1), or the given search space
            is empty.

    References:
        Williams. Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Machine Learning 1992.
        Zoph and Le. Neural Architecture Search with Reinforcement Learning. ICLR 2017.
    """

    def __init__(
        self,
        objective=None,
        max_trials: int = 10,
        learning_rate: float = 1.0,
        baseline_decay: float = 0.8,
        bins: int = 8,
        seed: int | None = None,
        hyperparameters=None,
        **kwargs,
    ):
        check_positive_integer("max_trials", max_trials)
        check_positive_integer("bins", bins)
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive; received {learning_rate!r}.")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"`baseline_decay` must be in [0, 1); received {baseline_decay!r}.")
        check_search_space(hyperparameters)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.learning_rate = float(learning_rate)
        self.baseline_decay = float(baseline_decay)
        self.bins = bins
        self.logits = {}  # hyperparameter name -> list of logits
        self.actions = {}  # trial id -> {hyperparameter name: category}
        self.rewards = []
        self.baseline = None

    def _categories(self, hp) -> list:
        if isinstance(hp, hp_types.Choice):
            return list(hp.values)
        if isinstance(hp, hp_types.Boolean):
            return [False, True]
        if isinstance(hp, hp_types.Fixed):
            return [hp.value]
        if isinstance(hp, hp_types.Int):
            values = list(range(hp.min_value, hp.max_value + 1, hp.step or 1))
            if len(values) <= self.bins and hp.sampling == "linear":
                return values
        return [hp.prob_to_value((index + 0.5) / self.bins) for index in range(self.bins)]

    def _policy_logits(self, hp) -> list:
        if hp.name not in self.logits:
            self.logits[hp.name] = [0.0] * len(self._categories(hp))
        return self.logits[hp.name]

    def populate_space(self, trial_id):
        """Samples a configuration from the controller's policy."""
        hyperparameters = self.hyperparameters.copy()
        for _ in range(self._max_collisions):
            hyperparameters.values = {}
            actions = {}
            for hp in hyperparameters.space:
                if not hyperparameters.is_active(hp):
                    continue
                logits = tf.constant([self._policy_logits(hp)], tf.float32)
                seed = tf.constant([self.seed, self._seed_state], tf.int64)
                self._seed_state += 1
                category = int(tf.random.stateless_categorical(logits, 1, seed)[0, 0])
                actions[hp.name] = category
                hyperparameters.values[hp.name] = self._categories(hp)[category]
            hyperparameters.ensure_active_values()
            if not self._duplicate(hyperparameters.values):
                self.actions[trial_id] = actions
                return {
                    "status": trial_module.TrialStatus.RUNNING,
                    "values": hyperparameters.values,
                }
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}

    def end_trial(self, trial):
        """Records the trial and, if it completed, takes a policy-gradient step."""
        super().end_trial(trial)
        trial = self.trials[trial.trial_id]
        if trial.trial_id not in self.actions:
            return
        if trial.status == trial_module.TrialStatus.COMPLETED:
            reward = trial.score if self.objective.direction == "max" else -trial.score
        elif trial.status == trial_module.TrialStatus.FAILED and self.rewards:
            reward = min(self.rewards)  # a crash or a NaN objective: the worst reward seen
        else:
            return
        self.rewards.append(float(reward))
        if self.baseline is None:
            self.baseline = float(reward)
        advantage = (reward - self.baseline) / (float(np.std(self.rewards)) + 1e-8)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._policy_step(self.actions[trial.trial_id], advantage)
        self.save()

    def _policy_step(self, actions: dict, advantage: float) -> None:
        names = sorted(actions)
        variables = [tf.Variable(self.logits[name]) for name in names]
        with tf.GradientTape() as tape:
            log_probability = tf.add_n(
                [
                    tf.nn.log_softmax(variable)[actions[name]]
                    for name, variable in zip(names, variables, strict=True)
                ]
            )
            loss = -advantage * log_probability
        gradients = tape.gradient(loss, variables)
        for name, variable, gradient in zip(names, variables, gradients, strict=True):
            self.logits[name] = (variable - self.learning_rate * gradient).numpy().tolist()

    def get_state(self):
        """The oracle's state: the controller's logits, actions and baseline."""
        state = super().get_state()
        state.update(
            logits=self.logits,
            actions=self.actions,
            rewards=self.rewards,
            baseline=self.baseline,
            learning_rate=self.learning_rate,
            baseline_decay=self.baseline_decay,
            bins=self.bins,
        )
        return state

    def set_state(self, state):
        """Restores the oracle's state, controller included."""
        super().set_state(state)
        self.logits = state["logits"]
        self.actions = state["actions"]
        self.rewards = state["rewards"]
        self.baseline = state["baseline"]
        self.learning_rate = state["learning_rate"]
        self.baseline_decay = state["baseline_decay"]
        self.bins = state["bins"]
