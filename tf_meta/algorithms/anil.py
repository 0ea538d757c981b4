"""ANIL: almost no inner loop, adapting only the head."""

from collections.abc import Sequence

import keras

from tf_meta.algorithms.maml import MAML


@keras.saving.register_keras_serializable(package="tf_meta")
class ANIL(MAML):
    """ANIL: MAML whose inner loop adapts only the network's head.

    With one episode, `train_step` adapts each task by gradient descent on the support
    loss with respect to the weights of `adapted_layers` only (by default the last layer
    that has weights); the body keeps its weights in the inner loop and is trained only by
    the outer step, which (second order by default) differentiates the query loss through
    the head's adaptation into the body. Backpropagation in the inner loop stops at the
    head, so a meta-step costs much less than MAML's.

    Args:
        model: The network (any Keras model whose head is a named layer).
        adapted_layers: Names of the layers adapted in the inner loop; None means the last
            layer of `model` that has trainable weights.
        **kwargs: The arguments of `MAML` (`inner_learning_rate`, `inner_steps`,
            `first_order`, `eval_inner_steps`, `inner_loss`, `name`, ...).

    Raises:
        ValueError: As `MAML`, or if a name in `adapted_layers` is not a layer of `model`
            or names a layer without trainable weights.

    References:
        Raghu, Raghu, Bengio and Vinyals. Rapid Learning or Feature Reuse? Towards
        Understanding the Effectiveness of MAML. ICLR 2020.
    """

    def __init__(self, model: keras.Model, adapted_layers: Sequence[str] | None = None, **kwargs):
        super().__init__(model, **kwargs)
        if isinstance(adapted_layers, str):
            adapted_layers = [adapted_layers]
        self.adapted_layers = None if adapted_layers is None else list(adapted_layers)
        if model.built:
            self.adapted_indices()

    def adapted_indices(self):
        """Positions of the adapted layers' weights in `.model.trainable_variables`.

        Raises:
            ValueError: If a name is not a layer of the model or its layer has no
                trainable weights.
        """
        layers = {layer.name: layer for layer in self.model.layers}
        with_weights = [name for name, layer in layers.items() if layer.trainable_weights]
        names = with_weights[-1:] if self.adapted_layers is None else self.adapted_layers
        positions = {
            id(variable): index for index, variable in enumerate(self.model.trainable_variables)
        }
        indices = []
        for name in names:
            if name not in layers or not layers[name].trainable_weights:
                raise ValueError(
                    f"`adapted_layers` names {name!r}, which is not a layer of "
                    f"{self.model.name} with trainable weights; its layers are "
                    f"{list(layers)}."
                )
            indices += [positions[id(variable)] for variable in layers[name].trainable_weights]
        return sorted(indices)

    def get_config(self):
        """The learner's configuration, including `adapted_layers`."""
        return {**super().get_config(), "adapted_layers": self.adapted_layers}
