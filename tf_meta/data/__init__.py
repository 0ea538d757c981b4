"""Episodic data: task families and few-shot episode samplers on tf.data."""

from tf_meta.data.episodes import augment_classes, episodes, quarter_turns
from tf_meta.data.omniglot import load_omniglot
from tf_meta.data.sinusoid import sinusoid, sinusoid_parameters

__all__ = [
    "augment_classes",
    "episodes",
    "load_omniglot",
    "quarter_turns",
    "sinusoid",
    "sinusoid_parameters",
]
