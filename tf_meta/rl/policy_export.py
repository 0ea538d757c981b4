"""SavedModel export of a meta-trained policy that adapts to a client's rollouts."""

import os

import keras
import tensorflow as tf

from tf_meta import backup
from tf_meta.rl.maml_policy_gradient import MAMLPolicyGradient


def export_policy(agent: MAMLPolicyGradient, path: str, overwrite: bool = False) -> None:
    """Writes `agent` as a SavedModel for TF Serving whose default signature adapts and acts.

    Endpoints:

    - `serving_default(observations, actions, rewards, query_observations)`: one task's
      rollouts (`[episodes, steps, ...]`, any counts) adapt the policy with the agent's
      `inner_steps` REINFORCE steps (`adapt_to_rollouts`), which then acts on the queries:
      `{"actions": [queries, action_size]}` (the Gaussian's mean) and `{"log_std": ...}`.
    - `act(observations)`: the meta-trained policy without adaptation, `{"actions": ...}`.

    The directory is staged beside `path` and renamed into place when complete.

    Args:
        agent: A `tf_meta.rl.MAMLPolicyGradient`.
        path: The SavedModel directory.
        overwrite: Whether to replace an existing `path`.

    Raises:
        ValueError: If `agent` is not a `MAMLPolicyGradient`, or `path` exists and
            `overwrite` is False.
    """
    if not isinstance(agent, MAMLPolicyGradient):
        raise ValueError(f"`agent` must be a MAMLPolicyGradient; received {type(agent)}.")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path!r} exists; pass `overwrite=True` to replace it.")
    environment = agent.environment
    observation = tf.TensorSpec([None, None, environment.observation_size], tf.float32)

    def adapt_and_act(observations, actions, rewards, query_observations):
        weights = agent.adapt_to_rollouts(observations, actions, rewards)
        return {
            "actions": agent.mean_actions(weights, query_observations),
            "log_std": weights[-1],
        }

    archive = keras.export.ExportArchive()
    archive.track(agent)
    archive.add_endpoint(
        "serving_default",
        adapt_and_act,
        input_signature=[
            tf.TensorSpec(observation.shape, tf.float32, name="observations"),
            tf.TensorSpec([None, None, environment.action_size], tf.float32, name="actions"),
            tf.TensorSpec([None, None], tf.float32, name="rewards"),
            tf.TensorSpec(
                [None, environment.observation_size], tf.float32, name="query_observations"
            ),
        ],
    )
    archive.add_endpoint(
        "act",
        lambda observations: {"actions": agent.mean_actions(agent.initial_weights(), observations)},
        input_signature=[
            tf.TensorSpec([None, environment.observation_size], tf.float32, name="observations")
        ],
    )
    backup.write_directory_atomically(
        path, lambda staging: archive.write_out(staging, verbose=False), overwrite=overwrite
    )
