"""Test session setup: two logical CPU devices so distribution strategies can be tested."""

import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Marks `slow` the parameters that a test's `ci_params` marker leaves out of CI.

    `@pytest.mark.ci_params("name", "MAML", "Reptile")` on a test parametrized over `name`
    keeps those two values in CI and runs the others only under `pytest -m slow`. Runs
    before `-m` deselects.
    """
    for item in items:
        marker = item.get_closest_marker("ci_params")
        if marker is not None:
            argument, *kept = marker.args
            if item.callspec.params[argument] not in kept:
                item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def omniglot_dir():
    """The directory holding omniglot/omniglot28.npz: skipped on a clone without it, never in CI."""
    from tf_meta.data import omniglot

    directory = os.environ.get(omniglot.DATA_DIR_VARIABLE)
    if directory and os.path.isfile(os.path.join(directory, omniglot.LOCAL_FILE)):
        return directory
    reason = (
        f"Omniglot data not found: set {omniglot.DATA_DIR_VARIABLE} to a directory holding "
        f"{omniglot.LOCAL_FILE} (.ci/run points it at ../shared/data)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def mirrored_strategy():
    """A MirroredStrategy over the two logical CPU devices that reduces on one device.

    The default cross-device reduction on CPUs uses collective ops whose instance keys
    collide between several strategies created in one process (a test session), failing
    with "Shape mismatch in the collective instance"; reducing on one device avoids it.
    """
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _free_ports(count):
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="session")
def free_ports():
    """`free_ports(count)`: ports for processes of a test cluster on 127.0.0.1."""
    return _free_ports


def _regression_episode(rng, tasks=3, shots=5, queries=4, features=3):
    x = {
        "support_x": rng.normal(size=(tasks, shots, features)),
        "support_y": rng.normal(size=(tasks, shots, 1)),
        "query_x": rng.normal(size=(tasks, queries, features)),
    }
    return x, rng.normal(size=(tasks, queries, 1))


@pytest.fixture(scope="session")
def regression_episode():
    """`regression_episode(rng, tasks, shots, queries, features)`: a float64 episode batch
    `(x, query_y)` of Gaussian inputs and targets, one target per example."""
    return _regression_episode


def _finite_differences(loss, variables, epsilon=1e-6):
    """Central finite differences of `loss()` with respect to each of `variables`.

    An independent check of a gradient: only forward evaluations, no tape.
    """
    gradients = []
    for variable in variables:
        base = variable.numpy()
        gradient = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * epsilon
                variable.assign(shifted)
                values.append(float(loss()))
            gradient[index] = (values[0] - values[1]) / (2 * epsilon)
        variable.assign(base)
        gradients.append(gradient)
    return gradients


@pytest.fixture
def finite_differences():
    """`finite_differences(loss, variables)`: central differences, float64 models advised."""
    return _finite_differences
