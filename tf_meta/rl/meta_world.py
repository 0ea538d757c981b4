"""Meta-World's ML1 benchmark: one robot-arm skill whose goal positions are the tasks."""

import keras
import tensorflow as tf

from tf_meta.rl.gymnasium_environment import GymnasiumEnvironment

SPLITS = ("train", "test")


@keras.saving.register_keras_serializable(package="tf_meta")
class MetaWorldML1(GymnasiumEnvironment):
    """Meta-World ML1 (Yu et al. 2019): a Sawyer arm learns one skill over goal positions.

    ML1 gives each skill (`reach-v3`, `pick-place-v3`, ...) 50 training and 50 held-out
    variations of its object and goal positions. The task parameter is a variation's index
    in the chosen split, so `sample_tasks` draws indices. The reward is Meta-World's, and
    `successes` records whether each episode reached the skill's success criterion, the
    benchmark's measure. It needs `metaworld` (`pip install tf_meta[rl]`).

    Args:
        skill: The Meta-World environment name, e.g. `"reach-v3"` or `"pick-place-v3"`.
        split: `"train"` or `"test"` (held-out variations).
        episodes: Episodes run side by side (the learner's `episodes`).
        horizon: Steps per episode (at most 500, Meta-World's limit).
        seed: The seed of the benchmark's variations and of the resets.

    Raises:
        ValueError: If `split` is neither, `skill` is not an ML1 skill, or `horizon`
            exceeds 500.

    References:
        Yu, Quillen, He, Julian, Hausman, Finn and Levine. Meta-World: A Benchmark and
        Evaluation for Multi-Task and Meta Reinforcement Learning. CoRL 2019.
        https://arxiv.org/abs/1910.10897
    """

    def __init__(
        self,
        skill: str = "reach-v3",
        split: str = "train",
        episodes: int = 10,
        horizon: int = 150,
        seed: int = 0,
    ):
        import metaworld  # an optional dependency: `pip install tf_meta[rl]`

        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
        if skill not in metaworld.ML1.ENV_NAMES:
            raise ValueError(
                f"`skill` {skill!r} is not an ML1 skill; choose from {metaworld.ML1.ENV_NAMES}."
            )
        if horizon > 500:
            raise ValueError(f"`horizon` ({horizon}) exceeds Meta-World's limit of 500 steps.")
        self.skill, self.split = skill, split
        benchmark = metaworld.ML1(skill, seed=seed)
        classes = benchmark.train_classes if split == "train" else benchmark.test_classes
        self._class = classes[skill]
        self.variations = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        super().__init__(f"Meta-World ML1 {skill} ({split})", episodes, horizon, seed)

    def make_environment(self):
        """One Meta-World environment of the skill."""
        return self._class()

    def sample_tasks(self, count, seed):
        """Indices of variations `[count, 1]`, uniform over the split's."""
        indices = tf.random.stateless_uniform(
            [count, 1], seed, maxval=len(self.variations), dtype=tf.int32
        )
        return tf.cast(indices, tf.float32)

    def set_task(self, environment, task):
        """Sets the variation whose index is `task`."""
        environment.set_task(self.variations[int(task[0])])

    def get_config(self):
        """The constructor's arguments."""
        return {
            "skill": self.skill,
            "split": self.split,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "seed": self.seed,
        }
