"""The base of tf_meta's tuners: a KerasTuner tuner that checks its objective first."""

import keras_tuner

from tf_meta.tuners.checks import check_objective


class MetaTuner(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` that rejects an objective the learner does not report.

    KerasTuner finds a missing objective only after the first trial has trained; this
    checks it before any trial runs.
    """

    def search(self, *fit_args, **fit_kwargs):
        """Checks the objective against the learner's metrics, then searches.

        Raises:
            ValueError: If the objective is not a value the learner reports.
        """
        check_objective(self)
        super().search(*fit_args, **fit_kwargs)
