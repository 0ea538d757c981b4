"""The record of the PPO drift runs on 2D navigation (RESULTS.md, "The PPO outer step").

tf-meta-navigation's MAML settings with the PPO outer step; every 50 meta-steps the policy's
log-std and the mean return on 40 held-out goals before and after one adaptation step; at
the end, that return for four inner learning rates on the final policy.

    python drift.py OUTER_LEARNING_RATE OUTPUT_JSON
"""

import json
import sys
import time

import keras

import tf_meta

learning_rate = float(sys.argv[1])
output = sys.argv[2]
keras.utils.set_random_seed(0)
environment = tf_meta.rl.PointNavigation()
policy = keras.Sequential(
    [
        keras.Input((2,)),
        keras.layers.Dense(100, "relu"),
        keras.layers.Dense(100, "relu"),
        keras.layers.Dense(2),
    ]
)
learner = tf_meta.rl.MAMLPolicyGradient(
    policy, environment, inner_learning_rate=0.1, episodes=20, seed=0, outer_step="ppo"
)
learner.compile(optimizer=keras.optimizers.Adam(learning_rate))
goals = environment.sample_tasks(40, [1, 1])
rows = []


class Log(keras.callbacks.Callback):
    """Appends one row of the log per epoch of 50 meta-steps, and rewrites the JSON."""

    def on_epoch_end(self, epoch, logs=None):
        """Logs the log-std and the held-out returns."""
        returns = learner.adaptation_returns(goals, 1).numpy()
        rows.append(
            {
                "meta_step": (epoch + 1) * 50,
                "log_std": learner.log_std.numpy().tolist(),
                "train_before": logs["return_before"],
                "train_after": logs["return_after"],
                "held_out_before": float(returns[:, 0].mean()),
                "held_out_after": float(returns[:, 1].mean()),
            }
        )
        with open(output, "w") as file:
            json.dump(rows, file, indent=1)


start = time.perf_counter()
learner.fit(
    environment.task_stream(20, seed=0), epochs=10, steps_per_epoch=50, callbacks=[Log()], verbose=2
)
print("seconds", time.perf_counter() - start)

# The inner step size at the end: does a smaller step recover the peak's adapted return?
sweep = {}
for rate in (0.025, 0.05, 0.1, 0.2):
    clone = tf_meta.rl.MAMLPolicyGradient(
        keras.models.clone_model(policy), environment, inner_learning_rate=rate, episodes=20, seed=0
    )
    clone.set_weights(learner.get_weights())
    returns = clone.adaptation_returns(goals, 1).numpy()
    sweep[rate] = [float(returns[:, 0].mean()), float(returns[:, 1].mean())]
rows.append({"inner_rate_sweep": sweep})
with open(output, "w") as file:
    json.dump(rows, file, indent=1)
print("sweep", sweep)
