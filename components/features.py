"""Feature keys and shapes: the tf.Example contract every component and client relies on."""

IMAGE_KEY = "image"  # 784 int64 pixels in 0..255, row-major 28x28
LABEL_KEY = "label"  # int64 in 0..9
IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10


def transformed_name(key: str) -> str:
    return key + "_xf"
