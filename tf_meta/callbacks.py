"""A Keras callback that logs the inner loop's support loss after each inner step."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta import episode
from tf_meta.evaluation import task_scores


class InnerLossCurve(keras.callbacks.Callback):
    """Adds the support loss after 0, 1, ..., `steps` inner steps to each epoch's logs.

    On a fixed episode batch, at the end of every epoch, the learner adapts to each task's
    support set with `k` inner steps and the callback averages the inner loss of the adapted
    weights on that support set over tasks, for `k = 0 ... steps`. The values go into the
    epoch's logs as `inner_loss_step_{k}`, so callbacks after this one in the list (Keras's
    `TensorBoard`, `CSVLogger`, `History`) record them: the curve shows whether the inner loop
    still descends, and how far, as meta-training goes on.

    Args:
        episodes: One episode batch `(x, query_y)` (only `x` is used), e.g. the first batch
            of a fixed pool.
        steps: The largest number of inner steps to log.

    Raises:
        ValueError: If `episodes` is not an episode batch or `steps` is negative.
    """

    def __init__(self, episodes, steps: int):
        super().__init__()
        x = episodes[0] if isinstance(episodes, (tuple, list)) else episodes
        episode.validate_episode(x)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"`steps` must be a non-negative integer; received {steps!r}.")
        # The support set doubles as the queries: predictions on it give the inner loss.
        self.episodes = {key: x[key] for key in (episode.SUPPORT_X, episode.SUPPORT_Y)}
        self.episodes[episode.QUERY_X] = x[episode.SUPPORT_X]
        self.steps = steps

    def losses(self) -> list[float]:
        """The mean support loss after 0 ... `steps` inner steps, with the current weights."""
        pool = tf.data.Dataset.from_tensors((self.episodes, self.episodes[episode.SUPPORT_Y]))
        return [
            float(np.mean(task_scores(self.model, pool, self.model.support_loss, steps)))
            for steps in range(self.steps + 1)
        ]

    def on_epoch_end(self, epoch, logs=None):
        """Adds `inner_loss_step_{k}` to `logs`."""
        if logs is not None:
            for step, value in enumerate(self.losses()):
                logs[f"inner_loss_step_{step}"] = value
