"""One training step of a head alone (sparse cross-entropy, SGD) at B=256, D=512, C=100 000.

Prints the median step time in seconds for the Dense floor, ArcFace, CosFace and SV-Softmax,
with XLA off and on, as JSON. Run it against two checkouts with PYTHONPATH to compare them
(benchmarks/results/architecture_before_after.md).
"""

import json
import time

import keras
import numpy as np
import tensorflow as tf

import keras_margins as km

B, D, C = 256, 512, 100_000
STEPS = 15


def step_time(layer, is_head, x, y, jit):
    def call(e, labels):
        return layer([e, labels], training=True) if is_head else layer(e)

    call(x, y)
    opt = keras.optimizers.SGD(0.1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit)
    def step(e, labels):
        with tf.GradientTape() as tape:
            loss = ce(labels, call(e, labels))
        grads = tape.gradient(loss, layer.trainable_variables)
        opt.apply(grads, layer.trainable_variables)
        return loss

    for _ in range(3):  # trace, compile, warm up
        step(x, y)
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        step(x, y).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(B, D)).astype("float32"))
    y = tf.constant(rng.integers(0, C, B).astype("int32"))
    contenders = {
        "floor": lambda: keras.layers.Dense(C, use_bias=False),
        "ArcFace": lambda: km.ArcFace(C),
        "CosFace": lambda: km.CosFace(C),
        "SVSoftmax": lambda: km.SVSoftmax(C),
    }
    results = {}
    for name, make in contenders.items():
        for jit in (False, True):
            results[f"{name} xla={jit}"] = step_time(make(), name != "floor", x, y, jit)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
