"""In-graph rollouts, returns, the linear feature baseline and GAE for policy gradients."""

from collections.abc import Callable

import tensorflow as tf

from tf_meta.rl.environment import TaskEnvironment


def rollout(
    environment: TaskEnvironment,
    act: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    task: tf.Tensor,
    episodes: int,
    seed,
):
    """`episodes` episodes of one task, stepped in the graph (`tf.scan` over time).

    Nothing here is differentiated: the actions are samples, and a policy gradient
    differentiates their log-probabilities afterwards (`gaussian_log_probability`).

    Args:
        environment: The task family.
        act: `act(observations, noise) -> actions` for `[episodes, ...]` batches, `noise`
            being standard normal `[episodes, action_size]`.
        task: One task parameter `[task_size]`.
        episodes: The number of episodes, run side by side.
        seed: The stateless seed of the noise (a pair of integers).

    Returns:
        `(observations, actions, rewards)`: `[episodes, horizon, observation_size]`,
        `[episodes, horizon, action_size]` and `[episodes, horizon]`.

    Raises:
        ValueError: If `episodes` is not a positive integer.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"`episodes` must be a positive integer; received {episodes!r}.")
    tasks = tf.repeat(task[None], episodes, axis=0)
    noise = tf.random.stateless_normal(
        [environment.horizon, episodes, environment.action_size], seed
    )

    def step(carry, noise_now):
        states = carry[0]
        observations = environment.observe(states, tasks)
        actions = tf.stop_gradient(act(observations, noise_now))
        states, rewards = environment.step(states, actions, tasks)
        return states, observations, actions, rewards

    initial = environment.initial_state(tasks)
    _, observations, actions, rewards = tf.scan(
        step,
        noise,
        initializer=(
            initial,
            tf.zeros([episodes, environment.observation_size]),
            tf.zeros([episodes, environment.action_size]),
            tf.zeros([episodes]),
        ),
    )
    time_major = lambda value: tf.transpose(  # noqa: E731
        value, [1, 0, *range(2, value.shape.rank)]
    )
    return time_major(observations), time_major(actions), time_major(rewards)


def gaussian_log_probability(actions, means, log_std) -> tf.Tensor:
    """The log-density of `actions` under a diagonal Gaussian, summed over action axes."""
    z = (actions - means) * tf.exp(-log_std)
    return tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.9189385332046727, axis=-1)


def clipped_surrogate(ratio, advantage, clip_ratio: float) -> tf.Tensor:
    """PPO's clipped surrogate, `min(r A, clip(r, 1 - clip_ratio, 1 + clip_ratio) A)`.

    Elementwise; its gradient with respect to `ratio` is zero where clipping takes over
    (the ratio has left the range in the direction the advantage rewards).

    References:
        Schulman, Wolski, Dhariwal, Radford and Klimov. Proximal Policy Optimization
        Algorithms. 2017. https://arxiv.org/abs/1707.06347
    """
    clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return tf.minimum(ratio * advantage, clipped * advantage)


def discounted_returns(rewards: tf.Tensor, discount) -> tf.Tensor:
    """`sum_k discount^k r_{t+k}` for every step of `[episodes, horizon]` rewards."""
    backward = tf.scan(
        lambda later, value: value + discount * later,
        tf.reverse(tf.transpose(rewards), [0]),
        initializer=tf.zeros_like(rewards[:, 0]),
    )
    return tf.transpose(tf.reverse(backward, [0]))


def mean_return(rewards: tf.Tensor) -> tf.Tensor:
    """The mean over episodes of the undiscounted return of `[episodes, horizon]` rewards."""
    return tf.reduce_mean(tf.reduce_sum(rewards, axis=1))


def baseline_features(observations: tf.Tensor, horizon: int) -> tf.Tensor:
    """The linear feature baseline's features (Duan et al. 2016), float64.

    Per step: the observation clipped to [-10, 10], its square, the time fraction and its
    square and cube, and a constant.
    """
    observations = tf.clip_by_value(tf.cast(observations, tf.float64), -10.0, 10.0)
    episodes, steps = tf.shape(observations)[0], tf.shape(observations)[1]
    time = tf.cast(tf.range(steps), tf.float64)[None, :, None] / float(horizon)
    time = tf.tile(time, [episodes, 1, 1])
    return tf.concat(
        [observations, observations**2, time, time**2, time**3, tf.ones_like(time)], axis=-1
    )


def linear_baseline(observations, returns, horizon: int, regularization: float = 1e-5):
    """Values from a ridge regression of `returns` on `baseline_features`, fitted on them.

    Args:
        observations: `[episodes, horizon, observation_size]`.
        returns: Discounted returns `[episodes, horizon]`.
        horizon: The episode length, which scales time.
        regularization: The ridge coefficient.

    Returns:
        The baseline's values `[episodes, horizon]`, float32 and without gradient.

    References:
        Duan, Chen, Houthooft, Schulman and Abbeel. Benchmarking Deep Reinforcement
        Learning for Continuous Control. ICML 2016. https://arxiv.org/abs/1604.06778
    """
    features = baseline_features(tf.stop_gradient(observations), horizon)
    flat = tf.reshape(features, [-1, features.shape[-1]])
    targets = tf.reshape(tf.cast(tf.stop_gradient(returns), tf.float64), [-1, 1])
    gram = tf.matmul(flat, flat, transpose_a=True)
    gram += regularization * tf.eye(features.shape[-1], dtype=tf.float64)
    coefficients = tf.linalg.solve(gram, tf.matmul(flat, targets, transpose_a=True))
    values = tf.reshape(tf.matmul(flat, coefficients), tf.shape(returns))
    return tf.cast(values, tf.float32)


def advantages(rewards, values, discount: float, gae_lambda: float) -> tf.Tensor:
    """Generalized advantage estimates (Schulman et al. 2016), standardized per batch.

    `delta_t = r_t + discount * V_{t+1} - V_t` (with `V` after the last step 0), and the
    advantage is the `discount * gae_lambda`-discounted sum of the deltas; `gae_lambda = 1`
    gives the discounted return minus the baseline. They are standardized (zero mean, unit
    variance over the batch), as rllab's `center_adv` does.

    Args:
        rewards: `[episodes, horizon]`.
        values: The baseline's values `[episodes, horizon]`.
        discount: The discount factor.
        gae_lambda: GAE's lambda.

    Returns:
        Advantages `[episodes, horizon]`, without gradient.
    """
    rewards, values = tf.stop_gradient(rewards), tf.stop_gradient(values)
    following = tf.concat([values[:, 1:], tf.zeros_like(values[:, :1])], axis=1)
    deltas = rewards + discount * following - values
    estimates = discounted_returns(deltas, discount * gae_lambda)
    mean, variance = tf.nn.moments(estimates, axes=[0, 1])
    return (estimates - mean) / (tf.sqrt(variance) + 1e-8)
