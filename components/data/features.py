"""Feature keys and shapes: the tf.Example contract every component and client relies on."""

IMAGE_KEY = "image"  # 784 int64 pixels in 0..255, row-major 28x28
LABEL_KEY = "label"  # int64 in 0..9
# Where an example came from; in the data, never in requests (the serving signatures drop them like the label).
SOURCE_KEY = "source"  # bytes: "mnist" for the base data set, else the span digit's source ("feedback", ...)
SPAN_KEY = "span"  # int64: 0 for MNIST, else the number of the sealed span (components/data/spans.py)
IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10


def transformed_name(key: str) -> str:
    return key + "_xf"
