"""A learned embedding of tasks, trained so that tasks with close best configurations are close."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.rules.update_rule import check_positive_integer
from tf_meta.tuners.configurations import best_values, encode
from tf_meta.tuners.meta_features import task_arrays


@keras.saving.register_keras_serializable(package="tf_meta")
class TaskEncoder(keras.Model):
    """Embeds a task from a sample of its examples (a Dataset2Vec-style set encoder).

    A task of any input and target width is read as the set of all (input column, target
    column) value pairs of its examples. A network embeds each pair; the mean over examples
    summarizes one column pair; a second network and the mean over column pairs summarize the
    task; a third maps it to the embedding. Values pass through `sign(v) log(1 + |v|)` first,
    so scales stay visible without dominating. At most `examples` examples, `input_columns`
    input columns and `target_columns` target columns are read (a fixed sample of each, so
    the embedding of a task is deterministic); shorter tasks are padded and masked.

    `fit_history` meta-trains it on a search history: for every pair of recorded tasks, the
    distance between their embeddings is regressed onto the distance between their best
    configurations (each hyperparameter in KerasTuner's unit encoding, divided by the square
    root of their number), so that tasks whose best configurations are close get close
    embeddings, and a new task's nearest recorded tasks are those whose best configurations
    should suit it.

    Args:
        embedding_size: Size of the embedding.
        units: Width of the hidden layers.
        examples: Examples read per task.
        input_columns: Input columns read per task.
        target_columns: Target columns (classes, for classification) read per task.
        **kwargs: `keras.Model` arguments (`name`).

    Raises:
        ValueError: If a size is not a positive integer.

    Example:
        encoder = TaskEncoder()
        encoder.fit_history(history.records(), steps=300, verbose=0)
        embedding = encoder.embed(x, y)

    References:
        Jomaa, Schmidt-Thieme and Grabocka. Dataset2Vec: Learning Dataset Meta-Features.
        Data Mining and Knowledge Discovery, 2021.
        Zaheer et al. Deep Sets. NeurIPS 2017.
    """

    def __init__(
        self,
        embedding_size: int = 8,
        units: int = 32,
        examples: int = 64,
        input_columns: int = 16,
        target_columns: int = 8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("embedding_size", embedding_size),
            ("units", units),
            ("examples", examples),
            ("input_columns", input_columns),
            ("target_columns", target_columns),
        ):
            check_positive_integer(name, value)
        self.embedding_size = embedding_size
        self.units = units
        self.examples = examples
        self.input_columns = input_columns
        self.target_columns = target_columns
        dense = keras.layers.Dense
        self.pair_network = keras.Sequential(
            [dense(units, activation="relu"), dense(units, activation="relu")]
        )
        self.column_network = keras.Sequential([dense(units, activation="relu")])
        self.task_network = keras.Sequential(
            [dense(units, activation="relu"), dense(embedding_size)]
        )

    def call(self, inputs):
        """Embeddings `[T, embedding_size]` of a batch of padded tasks (see `task_batch`)."""
        x, y = inputs["inputs"], inputs["targets"]
        example_mask = inputs["example_mask"][:, :, None, None, None]
        pairs = tf.stack(
            [
                tf.broadcast_to(x[:, :, :, None], tf.concat([tf.shape(x), tf.shape(y)[2:]], 0)),
                tf.broadcast_to(y[:, :, None, :], tf.concat([tf.shape(x), tf.shape(y)[2:]], 0)),
            ],
            axis=-1,
        )
        hidden = self.pair_network(pairs)
        hidden = tf.reduce_sum(hidden * example_mask, 1) / tf.reduce_sum(example_mask, 1)
        hidden = self.column_network(hidden)
        column_mask = (
            inputs["input_mask"][:, :, None, None] * inputs["target_mask"][:, None, :, None]
        )
        hidden = tf.reduce_sum(hidden * column_mask, [1, 2]) / tf.reduce_sum(column_mask, [1, 2])
        return self.task_network(hidden)

    def task_batch(self, tasks) -> dict:
        """Pads and masks tasks for `call`.

        Args:
            tasks: A list of `(x, y)` pairs (see `meta_features.task_arrays`).

        Returns:
            A dict of float32 arrays: `inputs` `[T, examples, input_columns]`, `targets`
            `[T, examples, target_columns]` and the masks `example_mask`, `input_mask`,
            `target_mask`.

        Raises:
            ValueError: If a task is not valid data (see `task_arrays`).
        """
        shapes = {
            "inputs": (self.examples, self.input_columns),
            "targets": (self.examples, self.target_columns),
            "example_mask": (self.examples,),
            "input_mask": (self.input_columns,),
            "target_mask": (self.target_columns,),
        }
        batch = {key: np.zeros((len(tasks),) + shape, np.float32) for key, shape in shapes.items()}
        for index, (x, y) in enumerate(tasks):
            inputs, targets, _ = task_arrays(x, y)
            rng = np.random.default_rng(0)
            rows = np.sort(rng.permutation(len(inputs))[: self.examples])
            columns = np.sort(rng.permutation(inputs.shape[1])[: self.input_columns])
            inputs = inputs[rows][:, columns]
            targets = targets[rows][:, : self.target_columns]
            for key, values in (("inputs", inputs), ("targets", targets)):
                batch[key][index, : len(rows), : values.shape[1]] = np.sign(values) * np.log1p(
                    np.abs(values)
                )
            batch["example_mask"][index, : len(rows)] = 1
            batch["input_mask"][index, : inputs.shape[1]] = 1
            batch["target_mask"][index, : targets.shape[1]] = 1
        return batch

    def embed(self, x, y) -> np.ndarray:
        """The embedding of one task, a float vector of `embedding_size`."""
        return self(self.task_batch([(x, y)]))[0].numpy()

    def train_step(self, data):
        """One step on a batch of tasks; logs `distance_loss`, the mean squared distance error."""
        inputs, configurations = data

        def distances(points):
            differences = points[:, None, :] - points[None, :, :]
            return tf.sqrt(tf.reduce_sum(differences**2, -1) + 1e-12)

        width = tf.cast(tf.shape(configurations)[1], tf.float32)
        targets = distances(configurations) / tf.sqrt(width)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((distances(self(inputs, training=True)) - targets) ** 2)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return {"distance_loss": loss}

    def fit_history(self, records, hyperparameters=None, steps: int = 300, verbose="auto"):
        """Meta-trains the encoder on the tasks of a search history.

        Args:
            records: `SearchHistory.records()`, at least 2.
            hyperparameters: The space whose encoding measures distances between best
                configurations; by default the first record's. Records of other spaces are
                carried into it (`configurations.fit_to_space`).
            steps: Training steps, each on all the records (one epoch of `steps` steps).
            verbose: `fit`'s verbosity (a progress bar by default).

        Returns:
            The `keras.callbacks.History` of `fit`.

        Raises:
            ValueError: If fewer than 2 records are given or `steps` is not a positive
                integer.
        """
        import keras_tuner

        check_positive_integer("steps", steps)
        if len(records) < 2:
            raise ValueError(f"`records` must hold at least 2 searches; received {len(records)}.")
        if hyperparameters is None:
            hyperparameters = keras_tuner.HyperParameters.from_config(records[0]["space"])
        configurations = np.stack(
            [encode(best_values(record), hyperparameters) for record in records]
        )
        inputs = self.task_batch([(record["x"], record["y"]) for record in records])
        if not self.compiled:
            self.compile(optimizer=keras.optimizers.Adam(1e-3))
        batches = tf.data.Dataset.from_tensors((inputs, configurations)).repeat()
        return self.fit(batches, steps_per_epoch=steps, shuffle=False, verbose=verbose)

    def get_config(self):
        """The constructor arguments."""
        config = super().get_config()
        config.update(
            embedding_size=self.embedding_size,
            units=self.units,
            examples=self.examples,
            input_columns=self.input_columns,
            target_columns=self.target_columns,
        )
        return config
