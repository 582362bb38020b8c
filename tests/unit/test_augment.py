"""Augmentation's shifts: whole pixels within the bound, zero-filled, reproducible, and equal to
shifting before ``normalize(axis=1)`` (so augmenting Transform's output is augmenting the digit)."""
import numpy as np
import pytest
import tensorflow as tf

from components.training import augment
from components.training.preprocessing import normalize_images


def _digits(count=64, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.float32)
    images[:, 6:22, 6:22] = rng.integers(0, 256, (count, 16, 16))  # ink away from the border
    return images


def _offset(before, after, bound):
    """The (dy, dx) that turns ``before`` into ``after``, found by trying every shift in the bound."""
    for dy in range(-bound, bound + 1):
        for dx in range(-bound, bound + 1):
            if np.array_equal(np.roll(before, (dy, dx), axis=(0, 1)), after):
                return dy, dx
    raise AssertionError("not a whole-pixel shift within the bound")


@pytest.mark.parametrize("bound", [1, 2])
def test_each_image_moves_by_whole_pixels_within_the_bound(bound):
    images = _digits()
    moved = augment.shift_batch(tf.constant(images), bound, tf.constant([3, 0], tf.int64)).numpy()
    offsets = {_offset(a, b, bound) for a, b in zip(images, moved)}
    assert len(offsets) > 3  # images of one batch move differently
    assert max(abs(d) for offset in offsets for d in offset) == bound


def test_the_uncovered_border_is_zero():
    images = np.ones((200, 28, 28), np.float32)
    moved = augment.shift_batch(tf.constant(images), 2, tf.constant([1, 2], tf.int64)).numpy()
    assert set(np.unique(moved)) == {0.0, 1.0}
    assert (moved.sum(axis=(1, 2)) >= 26 * 26).all() and (moved.sum(axis=(1, 2)) < 28 * 28).any()


def test_shifting_commutes_with_normalize_axis_1():
    images = _digits()
    seed = tf.constant([5, 9], tf.int64)
    shift_then_normalize = normalize_images(augment.shift_batch(tf.constant(images), 2, seed))
    normalize_then_shift = augment.shift_batch(normalize_images(tf.constant(images)), 2, seed)
    np.testing.assert_allclose(shift_then_normalize.numpy(), normalize_then_shift.numpy(), rtol=1e-6, atol=1e-7)


def _epochs(max_shift, seed, epochs=2):
    images = _digits(count=10)
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(5).repeat(epochs)
    return [b.numpy() for b, _ in augment.shifted(batches, max_shift, seed)]


def test_the_same_seed_gives_the_same_shifts_and_each_batch_its_own():
    first, again, other = _epochs(1, 42), _epochs(1, 42), _epochs(1, 43)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert not np.array_equal(first[0], first[2])  # the same images, another epoch, other shifts


def test_no_shift_leaves_the_batches_alone():
    assert all(np.array_equal(a, b) for a, b in zip(_epochs(0, 42), [_digits(10)[:5], _digits(10)[5:]] * 2))
