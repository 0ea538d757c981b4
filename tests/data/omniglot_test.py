import numpy as np
import pytest
import tensorflow_datasets as tfds

import tf_meta
from tf_meta.data import omniglot

# Declarative split sizes, in characters (each with 20 drawings).
SPLIT_CHARACTERS = {
    "background": 964,
    "evaluation": 659,
    "vinyals_train": 1028,
    "vinyals_val": 172,
    "vinyals_trainval": 1200,
    "vinyals_test": 423,
    "maml_train": 1200,
    "maml_test": 423,
}


@pytest.mark.parametrize("split", sorted(SPLIT_CHARACTERS))
def test_split_sizes(split, omniglot_dir):
    images, labels = tf_meta.data.load_omniglot(split, rotations=False, data_dir=omniglot_dir)
    assert images.shape == (SPLIT_CHARACTERS[split] * 20, 28, 28, 1) and images.dtype == np.uint8
    assert len(np.unique(labels)) == SPLIT_CHARACTERS[split]
    assert np.all(np.bincount(labels)[np.unique(labels)] == 20)


def test_splits_are_disjoint_and_cover_the_dataset(omniglot_dir):
    def characters(split):
        return set(tf_meta.data.load_omniglot(split, rotations=False, data_dir=omniglot_dir)[1])

    for parts, whole in (
        (("background", "evaluation"), None),
        (("vinyals_train", "vinyals_val", "vinyals_test"), None),
        (("maml_train", "maml_test"), None),
        (("vinyals_train", "vinyals_val"), "vinyals_trainval"),
    ):
        sets = [characters(part) for part in parts]
        assert sum(map(len, sets)) == len(set.union(*sets))
        assert set.union(*sets) == (characters(whole) if whole else set(range(1623)))
    # The Vinyals test characters are all from the evaluation alphabets; MAML's are not.
    assert characters("vinyals_test") <= characters("evaluation")


def test_rotations_are_classes_of_their_own(omniglot_dir):
    plain, plain_labels = tf_meta.data.load_omniglot("background", data_dir=omniglot_dir)
    rotated, rotated_labels = tf_meta.data.load_omniglot(
        "background", rotations=True, data_dir=omniglot_dir
    )
    assert len(np.unique(rotated_labels)) == 4 * len(np.unique(plain_labels)) == 4 * 964
    first = np.flatnonzero(rotated_labels == plain_labels[0] * 4 + 1)[0]
    np.testing.assert_array_equal(rotated[first, :, :, 0], np.rot90(plain[0, :, :, 0]))
    _, vinyals = tf_meta.data.load_omniglot("vinyals_train", data_dir=omniglot_dir)
    assert len(np.unique(vinyals)) == 4112  # the split file's line count


def test_maml_split_is_seeded(omniglot_dir):
    first = set(tf_meta.data.load_omniglot("maml_test", False, omniglot_dir)[1])
    again = set(tf_meta.data.load_omniglot("maml_test", False, omniglot_dir)[1])
    other = set(tf_meta.data.load_omniglot("maml_test", False, omniglot_dir, maml_split_seed=1)[1])
    assert first == again and first != other


def test_images_match_the_documented_statistics(omniglot_dir):
    images, _ = tf_meta.data.load_omniglot("background", rotations=False, data_dir=omniglot_dir)
    evaluation, _ = tf_meta.data.load_omniglot("evaluation", rotations=False, data_dir=omniglot_dir)
    mean = np.concatenate([images, evaluation]).mean() / 255
    assert mean == pytest.approx(0.0840, abs=5e-4)  # shared/data/omniglot/README.md


def test_missing_or_wrong_file_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv(omniglot.DATA_DIR_VARIABLE, raising=False)
    with pytest.raises(
        ValueError, match="neither `data_dir` nor \\$TF_META_DATA_DIR is set.*source='tfds'"
    ):
        tf_meta.data.load_omniglot()
    with pytest.raises(ValueError, match=f"looked for {tmp_path}/omniglot/omniglot28.npz"):
        tf_meta.data.load_omniglot(data_dir=str(tmp_path))
    (tmp_path / "omniglot").mkdir()
    np.savez(tmp_path / "omniglot" / "omniglot28.npz", images=np.zeros((2, 28, 28), "uint8"))
    with pytest.raises(ValueError, match=r"lacks the arrays \['character'"):
        tf_meta.data.load_omniglot(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`split` must be one of"):
        tf_meta.data.load_omniglot("train")
    with pytest.raises(ValueError, match="`source` must be"):
        tf_meta.data.load_omniglot(source="web")


def test_tfds_source_with_mock_data():
    # TFDS's own mock-data facility runs the real loading path without a download.
    with tfds.testing.mock_data(num_examples=24):
        images, labels = tf_meta.data.load_omniglot("evaluation", source="tfds")
        rotated, rotated_labels = tf_meta.data.load_omniglot("background", True, source="tfds")
    assert images.shape == (24, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 1623
    assert rotated.shape == (96, 28, 28, 1)
    np.testing.assert_array_equal(np.sort(rotated_labels % 4), np.repeat(np.arange(4), 24))


def test_local_file_built_from_tfds_loads_like_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        path = omniglot.build_local_file(str(tmp_path))
        from_tfds = tf_meta.data.load_omniglot("evaluation", source="tfds")
    assert path == str(tmp_path / "omniglot" / "omniglot28.npz")
    assert not [name for name in (tmp_path / "omniglot").iterdir() if name.name.startswith(".")]
    with np.load(path) as archive:
        assert sorted(archive.files) == sorted(omniglot.LOCAL_ARRAYS)
    local = tf_meta.data.load_omniglot("evaluation", data_dir=str(tmp_path))
    for ours, theirs in zip(local, from_tfds, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_brief_maml_on_omniglot_is_clearly_above_chance(omniglot_dir):
    import keras

    train = tf_meta.data.episodes(
        tf_meta.data.load_omniglot("vinyals_train", data_dir=omniglot_dir),
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=8,
        seed=0,
    )
    pool = tf_meta.data.episodes(
        tf_meta.data.load_omniglot("vinyals_test", data_dir=omniglot_dir),
        ways=5,
        shots=1,
        queries=5,
        meta_batch_size=50,
        seed=1,
        num_tasks=100,
    )
    learner = tf_meta.MAML(
        tf_meta.models.conv4(ways=5, filters=32),
        inner_learning_rate=0.4,
        first_order=True,
        eval_inner_steps=3,
    )
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    learner.fit(train, steps_per_epoch=100, verbose=0, shuffle=False)
    scores = tf_meta.evaluation.task_scores(
        learner, pool, metric=keras.metrics.sparse_categorical_accuracy
    )
    mean, half_width = tf_meta.evaluation.confidence_interval(scores)
    assert mean - half_width > 0.35, (mean, half_width)  # chance is 0.2
