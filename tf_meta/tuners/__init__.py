"""Meta-optimization of meta-learners' hyperparameters on KerasTuner (`pip install tf_meta[tune]`).

Every tf_meta learner is a `keras.Model`, so KerasTuner's own tuners (`RandomSearch`,
`BayesianOptimization`, `Hyperband`) search it directly. This package adds the two families
KerasTuner lacks: regularized evolution (`Evolution`) and a REINFORCE controller
(`Reinforce`), each an `Oracle` with its `Tuner`.
"""

from tf_meta.tuners.evolution import Evolution
from tf_meta.tuners.evolution_oracle import EvolutionOracle
from tf_meta.tuners.meta_tuner import MetaTuner
from tf_meta.tuners.reinforce import Reinforce
from tf_meta.tuners.reinforce_oracle import ReinforceOracle

__all__ = ["Evolution", "EvolutionOracle", "MetaTuner", "Reinforce", "ReinforceOracle"]
