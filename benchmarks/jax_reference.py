"""The JAX reference of `throughput.py`: the same meta-steps, vmapped over tasks and jitted.

What a JAX user writes for these workloads, the way google/learned_optimization and most
JAX meta-learning code do: the network as a pure function of a parameter tree, the tasks of
a meta-batch under `jax.vmap`, the whole meta-step (inner loop, outer gradient and optax's
Adam update) under one `jax.jit`. The networks, initializers, losses and hyperparameters
are those of `throughput.py`'s Keras configurations:

- sinusoid MAML: MLP 1-40-40-1 (ReLU), mean squared error, one inner step of 0.01;
- Omniglot MAML, second order: conv4 (3x3 convolutions with 64 filters, batch
  normalization on the batch's statistics, ReLU, 2x2 max-pooling) and a 5-way Dense head,
  cross-entropy, one inner step of 0.4;
- Omniglot prototypical network: the same conv4 without a head, squared Euclidean
  distances to the class means.

Adam's epsilon is Keras's (1e-7). Needs the `bench` extra (`pip install ".[bench]"`), which
installs JAX for the CPU.

References:
    Bradbury et al. JAX: composable transformations of Python+NumPy programs. 2018.
    https://github.com/jax-ml/jax
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

BATCH_NORM_EPSILON = 1e-3  # Keras's BatchNormalization default


def _glorot_uniform(key, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


def _dense(key, inputs, outputs):
    return {
        "kernel": _glorot_uniform(key, (inputs, outputs), inputs, outputs),
        "bias": jnp.zeros(outputs),
    }


def mlp_parameters(key, sizes=(1, 40, 40, 1)):
    """The MLP's parameters: one Dense layer per pair of consecutive `sizes`."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def mlp(parameters, inputs):
    """The MLP with ReLU hidden layers on `[batch, features]`."""
    for layer in parameters[:-1]:
        inputs = jax.nn.relu(inputs @ layer["kernel"] + layer["bias"])
    return inputs @ parameters[-1]["kernel"] + parameters[-1]["bias"]


def conv4_parameters(key, ways=5, filters=64, channels=1, features=64):
    """conv4's parameters, with a `ways`-logit head unless `ways` is None."""
    keys = jax.random.split(key, 5)
    blocks = []
    for index in range(4):
        inputs = channels if index == 0 else filters
        blocks.append(
            {
                "kernel": _glorot_uniform(
                    keys[index], (3, 3, inputs, filters), 9 * inputs, 9 * filters
                ),
                "bias": jnp.zeros(filters),
                "scale": jnp.ones(filters),
                "offset": jnp.zeros(filters),
            }
        )
    parameters = {"blocks": blocks}
    if ways is not None:
        parameters["head"] = _dense(keys[4], features, ways)
    return parameters


def conv4(parameters, images):
    """conv4 on `[batch, 28, 28, channels]`, batch normalization in training mode."""
    outputs = images
    for block in parameters["blocks"]:
        outputs = jax.lax.conv_general_dilated(
            outputs,
            block["kernel"],
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        outputs = outputs + block["bias"]
        mean = jnp.mean(outputs, axis=(0, 1, 2))
        variance = jnp.var(outputs, axis=(0, 1, 2))
        outputs = (outputs - mean) * jax.lax.rsqrt(variance + BATCH_NORM_EPSILON)
        outputs = jax.nn.relu(outputs * block["scale"] + block["offset"])
        outputs = jax.lax.reduce_window(
            outputs, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        )
    outputs = outputs.reshape(outputs.shape[0], -1)
    if "head" in parameters:
        outputs = outputs @ parameters["head"]["kernel"] + parameters["head"]["bias"]
    return outputs


def mean_squared_error(predictions, targets):
    return jnp.mean(jnp.square(predictions - targets))


def cross_entropy(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def maml_loss(network, loss, inner_learning_rate, inner_steps=1):
    """The meta-batch's mean query loss after adaptation, a function of the parameters."""

    def task_loss(parameters, support_x, support_y, query_x, query_y):
        fast = parameters
        for _ in range(inner_steps):
            gradients = jax.grad(lambda weights: loss(network(weights, support_x), support_y))(fast)
            fast = jax.tree.map(lambda w, g: w - inner_learning_rate * g, fast, gradients)
        return loss(network(fast, query_x), query_y)

    def meta_loss(parameters, batch):
        losses = jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(parameters, *batch)
        return jnp.mean(losses)

    return meta_loss


def prototypical_loss(network):
    """The meta-batch's mean query cross-entropy against the support's class means."""

    def task_loss(parameters, support_x, support_y, query_x, query_y):
        support, query = network(parameters, support_x), network(parameters, query_x)
        ways = 5
        one_hot = jax.nn.one_hot(support_y, ways)
        prototypes = (one_hot.T @ support) / jnp.sum(one_hot, axis=0)[:, None]
        distances = jnp.sum(jnp.square(query[:, None, :] - prototypes[None]), axis=-1)
        return cross_entropy(-distances, query_y)

    def meta_loss(parameters, batch):
        losses = jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(parameters, *batch)
        return jnp.mean(losses)

    return meta_loss


class Reference:
    """One jitted meta-step of a JAX workload, fed the same in-memory episode batches.

    Args:
        workload: `"sinusoid MAML"`, `"omniglot MAML"` or `"omniglot prototypical"`.
        batches: Episode batches in the `tf_meta` contract, `(x, query_y)` pairs of
            tensors or arrays, cycled through in order.
        learning_rate: Adam's learning rate.
        seed: The seed of the initialization.
    """

    def __init__(self, workload, batches, learning_rate=1e-3, seed=0):
        key = jax.random.PRNGKey(seed)
        if workload == "sinusoid MAML":
            parameters = mlp_parameters(key)
            meta_loss = maml_loss(mlp, mean_squared_error, 0.01)
        elif workload == "omniglot MAML":
            parameters = conv4_parameters(key, ways=5)
            meta_loss = maml_loss(conv4, cross_entropy, 0.4)
        elif workload == "omniglot prototypical":
            parameters = conv4_parameters(key, ways=None)
            meta_loss = prototypical_loss(conv4)
        else:
            raise ValueError(f"Unknown `workload` {workload!r}.")
        optimizer = optax.adam(learning_rate, eps=1e-7)

        def step(parameters, state, batch):
            loss, gradients = jax.value_and_grad(meta_loss)(parameters, batch)
            updates, state = optimizer.update(gradients, state, parameters)
            return optax.apply_updates(parameters, updates), state, loss

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._parameters = parameters
        self._state = optimizer.init(parameters)
        self._batches = [
            jax.device_put(
                tuple(
                    np.asarray(value) for value in (x["support_x"], x["support_y"], x["query_x"], y)
                )
            )
            for x, y in batches
        ]
        self._next = 0

    def run(self, count):
        """Runs `count` meta-steps and waits for them; returns the last loss."""
        loss = None
        for _ in range(count):
            batch = self._batches[self._next % len(self._batches)]
            self._next += 1
            self._parameters, self._state, loss = self._step(self._parameters, self._state, batch)
        return float(jax.block_until_ready(loss))

    def seconds_per_step(self, count):
        """Seconds per meta-step over `count` steps after one, as `throughput.py` times."""
        self.run(1)
        start = time.perf_counter()
        self.run(count - 1)
        return (time.perf_counter() - start) / (count - 1)
