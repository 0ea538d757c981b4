import numpy as np
import pytest

import tf_meta


@pytest.mark.parametrize("size, features", [(28, 64), (84, 64 * 5 * 5)])
def test_conv4_shapes_and_parameters(size, features):
    encoder = tf_meta.models.conv4(input_shape=(size, size, 3 if size == 84 else 1), ways=None)
    assert encoder.output_shape == (None, features)
    classifier = tf_meta.models.conv4(ways=5)
    assert classifier.output_shape == (None, 5)
    # 4 blocks: 3x3 convolutions (first on 1 channel) with biases, BatchNorm scale and offset.
    expected = (9 * 1 * 64 + 64) + 3 * (9 * 64 * 64 + 64) + 4 * 2 * 64 + (64 * 5 + 5)
    assert sum(int(np.prod(w.shape)) for w in classifier.trainable_weights) == expected


def test_mlp_is_the_sinusoid_network():
    network = tf_meta.models.mlp()
    assert [w.shape for w in network.trainable_weights] == [
        (1, 40),
        (40,),
        (40, 40),
        (40,),
        (40, 1),
        (1,),
    ]


@pytest.mark.parametrize(
    "factory, arguments",
    [
        (tf_meta.models.conv4, {"ways": 0}),
        (tf_meta.models.conv4, {"filters": -1}),
        (tf_meta.models.mlp, {"hidden_units": (40, 0)}),
        (tf_meta.models.mlp, {"outputs": 1.5}),
    ],
)
def test_bad_widths_raise(factory, arguments):
    with pytest.raises(ValueError, match=next(iter(arguments))):
        factory(**arguments)
