"""Omniglot (Lake et al. 2015) at 28x28, from a local copy or TFDS, with the field's splits."""

import os
from importlib import resources

import numpy as np
import tensorflow as tf

from tf_meta.data.episodes import augment_classes, quarter_turns

DATA_DIR_VARIABLE = "TF_META_DATA_DIR"
LOCAL_FILE = os.path.join("omniglot", "omniglot28.npz")
LOCAL_ARRAYS = ("images", "character", "alphabet", "split", "alphabet_names")
SPLITS = (
    "background",
    "evaluation",
    "vinyals_train",
    "vinyals_val",
    "vinyals_trainval",
    "vinyals_test",
    "maml_train",
    "maml_test",
)
MAML_TRAIN_CHARACTERS = 1200


def _local_path(data_dir: str | None) -> str:
    root = data_dir or os.environ.get(DATA_DIR_VARIABLE)
    path = os.path.join(root, LOCAL_FILE) if root else None
    if path is None or not os.path.isfile(path):
        where = (
            f"looked for {path} (from the `data_dir` argument or ${DATA_DIR_VARIABLE})"
            if path
            else f"neither `data_dir` nor ${DATA_DIR_VARIABLE} is set"
        )
        raise ValueError(
            f"Omniglot was not found: {where}. Either put the file `{LOCAL_FILE}` (arrays "
            f"{', '.join(LOCAL_ARRAYS)}: 28x28 uint8 images with per-image character, "
            f"alphabet and background/evaluation labels) under a directory and pass it as "
            f"`data_dir` or ${DATA_DIR_VARIABLE}, or load it through TensorFlow Datasets with "
            "`source='tfds'` on a machine that can download it."
        )
    return path


def _read_local(data_dir):
    """Images, character ids, evaluation flags, alphabet names and in-alphabet indices."""
    path = _local_path(data_dir)
    with np.load(path) as archive:
        missing = [name for name in LOCAL_ARRAYS if name not in archive.files]
        if missing:
            raise ValueError(
                f"The Omniglot file {path} lacks the arrays {missing}; it has {archive.files}."
            )
        arrays = {name: archive[name] for name in LOCAL_ARRAYS}
    images = arrays["images"]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(arrays["character"]):
        raise ValueError(
            f"The Omniglot file {path} has images of shape {images.shape} for "
            f"{len(arrays['character'])} labels; expected [examples, 28, 28]."
        )
    character = arrays["character"].astype(np.int64)
    alphabet = arrays["alphabet"].astype(np.int64)
    first_character = {a: character[alphabet == a].min() for a in np.unique(alphabet)}
    index_in_alphabet = character - np.array([first_character[a] for a in alphabet])
    names = arrays["alphabet_names"][alphabet]
    return images, character, arrays["split"] == 1, names, index_in_alphabet


def _read_tfds(data_dir):
    """The same arrays as `_read_local`, from the TFDS `omniglot` builder."""
    arrays = _tfds_arrays(data_dir)
    names = arrays["alphabet_names"][arrays["alphabet"]]
    return (
        arrays["images"],
        arrays["character"],
        arrays["split"] == 1,
        names,
        arrays["index_in_alphabet"],
    )


def _tfds_arrays(data_dir) -> dict[str, np.ndarray]:
    """The arrays of the local file (and each drawing's index in its alphabet), from TFDS."""
    import tensorflow_datasets as tfds

    parts, alphabet_names = [], None
    for tfds_split, evaluation in (("train", 0), ("test", 1)):
        dataset, info = tfds.load("omniglot", split=tfds_split, data_dir=data_dir, with_info=True)
        alphabet_names = np.array(info.features["alphabet"].names)

        def to_28(example):
            ink = 255 - tf.cast(example["image"][..., :1], tf.float32)  # black ink -> bright
            small = tf.image.resize(ink, [28, 28], method="lanczos3", antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)[..., 0]
            return image, example["label"], example["alphabet"], example["alphabet_char_id"]

        batches = list(dataset.map(to_28).batch(4096).as_numpy_iterator())
        images, labels, alphabets, indices = (np.concatenate(p) for p in zip(*batches, strict=True))
        parts.append((images, labels, alphabets, np.full(len(labels), evaluation), indices))
    images, character, alphabet, split, index_in_alphabet = (
        np.concatenate(p) for p in zip(*parts, strict=True)
    )
    return {
        "images": images,
        "character": character.astype(np.int64),
        "alphabet": alphabet.astype(np.int64),
        "split": split.astype(np.int64),
        "alphabet_names": alphabet_names,
        "index_in_alphabet": index_in_alphabet.astype(np.int64),
    }


def build_local_file(directory: str, tfds_data_dir: str | None = None) -> str:
    """Writes `omniglot/omniglot28.npz` under `directory` from the TFDS `omniglot` dataset.

    The file is what `load_omniglot(source="local")` reads (`LOCAL_ARRAYS`), so a machine
    that downloaded Omniglot once through TFDS can train and test offline afterwards, with
    `TF_META_DATA_DIR=directory`. It is written under a temporary name and renamed.

    Args:
        directory: Where `omniglot/omniglot28.npz` is written.
        tfds_data_dir: TFDS's data directory (None: TFDS's default); TFDS downloads the
            dataset there if it is not yet prepared.

    Returns:
        The path of the file written.
    """
    from tf_meta.backup import replace_atomically

    arrays = _tfds_arrays(tfds_data_dir)
    path = os.path.join(directory, LOCAL_FILE)
    replace_atomically(
        path,
        lambda temporary: np.savez_compressed(temporary, **{k: arrays[k] for k in LOCAL_ARRAYS}),
    )
    return path


def _vinyals_characters(split: str) -> set[tuple[str, int]]:
    files = {"train": ["train"], "val": ["val"], "trainval": ["train", "val"], "test": ["test"]}
    characters = set()
    for name in files[split]:
        text = resources.files("tf_meta.data").joinpath("omniglot_splits", f"{name}.txt")
        for line in text.read_text().split():
            alphabet, character, _ = line.split("/")
            characters.add((alphabet, int(character[len("character") :]) - 1))
    return characters


def load_omniglot(
    split: str = "background",
    rotations: bool | None = None,
    data_dir: str | None = None,
    source: str = "local",
    maml_split_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Omniglot's 1623 characters x 20 drawings at 28x28, for `tf_meta.data.episodes`.

    Args:
        split: One of `SPLITS`. `background` / `evaluation` are the dataset's own (964 /
            659 characters); `vinyals_train` / `vinyals_val` / `vinyals_trainval` /
            `vinyals_test` are the split of Vinyals et al. used by Prototypical Networks
            (1028 / 172 / 1200 / 423 characters); `maml_train` / `maml_test` are MAML's
            (1200 / 423 characters, drawn by a shuffle seeded with `maml_split_seed`).
        rotations: If True, each character rotated by 0, 90, 180 and 270 degrees is a class
            of its own (4x the classes). None means the split's convention: rotated for the
            Vinyals and MAML splits, not for `background` / `evaluation`.
        data_dir: For `source="local"`, the directory holding `omniglot/omniglot28.npz`;
            None reads `$TF_META_DATA_DIR`. For `source="tfds"`, the TFDS data directory.
        source: `"local"` (the file above) or `"tfds"` (the TFDS `omniglot` dataset,
            downloaded by TFDS if needed, inverted to bright ink and resized to 28x28).
        maml_split_seed: Seed of the MAML split's shuffle of the 1623 characters.

    Returns:
        `(images, labels)`: uint8 images `[examples, 28, 28, 1]` with bright ink on a dark
        background, and int64 labels: the global character id (0-1622), times 4 plus the
        number of quarter turns when rotated.

    Raises:
        ValueError: If `split` or `source` is unknown, or the local file is missing or
            lacks the expected arrays (the message says where it looked and how to get it).

    References:
        Lake, Salakhutdinov and Tenenbaum. Human-level concept learning through
        probabilistic program induction. Science 2015.
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
    if source not in ("local", "tfds"):
        raise ValueError(f"`source` must be 'local' or 'tfds'; received {source!r}.")
    images, character, evaluation, names, index_in_alphabet = (
        _read_local(data_dir) if source == "local" else _read_tfds(data_dir)
    )
    if split in ("background", "evaluation"):
        keep = evaluation == (split == "evaluation")
    elif split.startswith("vinyals_"):
        wanted = _vinyals_characters(split[len("vinyals_") :])
        keep = np.array(
            [(name, index) in wanted for name, index in zip(names, index_in_alphabet, strict=True)]
        )
    else:
        shuffled = np.random.default_rng(maml_split_seed).permutation(np.unique(character))
        train = shuffled[:MAML_TRAIN_CHARACTERS]
        keep = np.isin(character, train) == (split == "maml_train")
    images, labels = images[keep][..., None], character[keep]
    if rotations is None:
        rotations = split not in ("background", "evaluation")
    if rotations:
        images, labels = augment_classes(images, labels, quarter_turns())
    return images, labels
