"""Transform's ``preprocessing_fn``: the seed's ``tf.keras.utils.normalize(x, axis=1)`` in the graph.

Keeping the normalization inside the TensorFlow graph means the exported SavedModel applies it
too, so a client sends raw pixels and gets the same answer the model was evaluated on.
"""
import tensorflow as tf

from components.data import features


def normalize_images(images: tf.Tensor) -> tf.Tensor:
    """``tf.keras.utils.normalize(images, axis=1)`` for a batch of 28x28 images.

    Each of the 28 columns is divided by its L2 norm over the 28 rows; an all-zero column stays
    zero (Keras divides by 1 where the norm is 0). Scale-invariant, so 0..255 and 0..1 inputs agree.
    """
    images = tf.reshape(tf.cast(images, tf.float32), [-1, features.IMAGE_SIZE, features.IMAGE_SIZE])
    norms = tf.norm(images, ord=2, axis=1, keepdims=True)
    return images / tf.where(norms == 0.0, tf.ones_like(norms), norms)


def preprocessing_fn(inputs):
    """Raw ``image`` (int64 [None, 784]) becomes ``image_xf`` (float32 [None, 28, 28]); ``label`` passes through."""
    return {
        features.transformed_name(features.IMAGE_KEY): normalize_images(inputs[features.IMAGE_KEY]),
        features.LABEL_KEY: inputs[features.LABEL_KEY],
    }
