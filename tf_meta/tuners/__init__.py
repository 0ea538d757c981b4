"""Meta-optimization of meta-learners' hyperparameters on KerasTuner (`pip install tf_meta[tune]`).

Every tf_meta learner is a `keras.Model`, so KerasTuner's own tuners (`RandomSearch`,
`BayesianOptimization`, `Hyperband`) search it directly. This package adds the two families
KerasTuner lacks: regularized evolution (`Evolution`) and a REINFORCE controller
(`Reinforce`), each an `Oracle` with its `Tuner`. And it learns across searches: a
`SearchHistory` records finished searches with their tasks' data, `TaskEncoder` learns an
embedding of tasks from it, `TransferOracle` starts a new search from the best
configurations of the most similar recorded tasks, and `ConfigurationPredictor` proposes a
configuration for a new task without a trial.
"""

from tf_meta.tuners.configuration_predictor import ConfigurationPredictor
from tf_meta.tuners.evolution import Evolution
from tf_meta.tuners.evolution_oracle import EvolutionOracle
from tf_meta.tuners.meta_tuner import MetaTuner
from tf_meta.tuners.reinforce import Reinforce
from tf_meta.tuners.reinforce_oracle import ReinforceOracle
from tf_meta.tuners.search_history import SearchHistory
from tf_meta.tuners.task_encoder import TaskEncoder
from tf_meta.tuners.transfer_oracle import TransferOracle

__all__ = [
    "ConfigurationPredictor",
    "Evolution",
    "EvolutionOracle",
    "MetaTuner",
    "Reinforce",
    "ReinforceOracle",
    "SearchHistory",
    "TaskEncoder",
    "TransferOracle",
]
