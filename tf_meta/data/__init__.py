"""Episodic data: task families and few-shot episode samplers on tf.data."""

from tf_meta.data.sinusoid import sinusoid, sinusoid_parameters

__all__ = ["sinusoid", "sinusoid_parameters"]
