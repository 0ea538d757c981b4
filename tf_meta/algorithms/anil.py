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
    head, so a meta-step costs much less than MAML's. In a `keras.Sequential` network the
    body runs once per task on the support inputs (and once on the queries under the
    multi-step loss), and each inner step runs only the layers from the first adapted one
    on, as in the authors' implementation; other networks, and
    `gradient_checkpointing=True`, run the whole network at every inner step.

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

    def _inner_network(self):
        """The head and the body, so that the body runs once per task (see `MAML`).

        The whole model is returned when `body_and_head` finds no split, and under gradient
        checkpointing, whose recomputed steps must receive everything they differentiate as
        arguments.
        """
        split = self.body_and_head()
        if split is None or self.gradient_checkpointing:
            return super()._inner_network()
        body, head = split
        return head, len(body.trainable_variables), len(body.non_trainable_variables), body

    def body_and_head(self):
        """The layers before the first adapted layer, and the layers from it on.

        Returns:
            Two layer chains whose variables, body's then head's, are `.model`'s in order;
            None if `.model` is not a `keras.Sequential`, if its first layer is adapted, or
            if its variables are not ordered by layer.
        """
        if not isinstance(self.model, keras.Sequential):
            return None
        adapted = {id(self.model.trainable_variables[index]) for index in self.adapted_indices()}
        layers = self.model.layers
        first = next(
            index
            for index, layer in enumerate(layers)
            if any(id(variable) in adapted for variable in layer.trainable_variables)
        )
        if first == 0:
            return None
        body, head = _LayerChain(layers[:first]), _LayerChain(layers[first:])
        for attribute in ("trainable_variables", "non_trainable_variables"):
            ordered = getattr(body, attribute) + getattr(head, attribute)
            if [id(v) for v in ordered] != [id(v) for v in getattr(self.model, attribute)]:
                return None
        return body, head

    def get_config(self):
        """The learner's configuration, including `adapted_layers`."""
        return {**super().get_config(), "adapted_layers": self.adapted_layers}


class _LayerChain:
    """Layers applied one after another, with the variables of `keras.Model` (for ANIL).

    `tf_meta.adaptation.predictions` runs it as it runs a model: it reads `trainable_variables`
    and `non_trainable_variables` and calls it with `training=True`.

    Args:
        layers: Built Keras layers, each taking the previous one's output.
    """

    def __init__(self, layers):
        self.layers = list(layers)

    @property
    def trainable_variables(self) -> list:
        """The layers' trainable variables, in layer order."""
        return [variable for layer in self.layers for variable in layer.trainable_variables]

    @property
    def non_trainable_variables(self) -> list:
        """The layers' non-trainable variables, in layer order."""
        return [variable for layer in self.layers for variable in layer.non_trainable_variables]

    def __call__(self, inputs, training=False):
        """Applies the layers in turn."""
        for layer in self.layers:
            inputs = layer(inputs, training=training)
        return inputs
