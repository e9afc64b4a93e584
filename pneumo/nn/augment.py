"""Training augmentation with stateless, per-batch seeds: the same params give the same pixels.

Keras's random preprocessing layers draw from a stateful seed generator, so inside a parallel
`tf.data` map the augmentation a batch gets depends on which call reached the generator first.
Here every random number is drawn with `tf.random.stateless_*` from a seed made of the run's
seed, the training phase and the batch's step number, so a batch's augmentation depends on where
it sits in training and on nothing else (not on threads, call order or timing).

The transforms follow Keras's layers of the same names: rotation by up to `rotation` of a full
turn, zoom by a factor in [1 - zoom, 1 + zoom] on both axes (above 1 zooms out), translation by up
to `translation` of the side on each axis, contrast scaled about each image's mean by a factor in
[1 - contrast, 1 + contrast], brightness shifted by up to `brightness` x 255, detector noise of
`noise` grey levels, and (only if asked) a left-right flip. Rotation, zoom, translation and flip
are one affine resampling (bilinear, zeros outside), so an image is interpolated once.
"""

from __future__ import annotations

import math

import tensorflow as tf

from pneumo.core.config import AugmentParams

PIXEL_MAX = 255.0


def batch_seed(seed: int, phase: int, step: tf.Tensor) -> tf.Tensor:
    """The stateless seed of one batch: a function of (run seed, phase, step) only."""
    base = tf.constant([seed, phase], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))


def _uniform(seed: tf.Tensor, k: int, n: tf.Tensor, bound: float) -> tf.Tensor:
    """n draws from U(-bound, bound) under the k-th sub-seed of `seed`."""
    sub = tf.random.experimental.stateless_fold_in(seed, k)
    return tf.random.stateless_uniform([n], sub, minval=-bound, maxval=bound)


def _affine(aug: AugmentParams, seed: tf.Tensor, n: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Per-image projective transforms (output pixel -> input pixel), as ImageProjectiveTransformV3 takes them."""
    angle = _uniform(seed, 1, n, aug.rotation * 2.0 * math.pi)
    scale = 1.0 + _uniform(seed, 2, n, aug.zoom)
    dy = _uniform(seed, 3, n, aug.translation) * height
    dx = _uniform(seed, 4, n, aug.translation) * width
    flip = tf.zeros([n])
    if aug.flip:
        sub = tf.random.experimental.stateless_fold_in(seed, 5)
        flip = tf.cast(tf.random.stateless_uniform([n], sub) < 0.5, tf.float32)
    sign = 1.0 - 2.0 * flip  # -1 mirrors x about the centre
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # input = M (output - centre - shift) + centre, with M = scale * R(-angle), then the mirror on x.
    a0, a1 = sign * cos, sign * sin
    b0, b1 = -sin, cos
    ox, oy = -cx - dx, -cy - dy
    a2 = sign * (cos * ox + sin * oy) + cx
    b2 = -sin * ox + cos * oy + cy
    zeros = tf.zeros([n])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, aug: AugmentParams, seed: tf.Tensor) -> tf.Tensor:
    """Augment a batch of grey images (B, H, W, 1) float32 in [0, 255]; the result stays in range."""
    n = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    if aug.rotation or aug.zoom or aug.translation or aug.flip:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=_affine(aug, seed, n, height, width),
            output_shape=tf.constant([height, width], tf.int32),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    if aug.contrast:
        factor = 1.0 + _uniform(seed, 6, n, aug.contrast)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor[:, None, None, None] + mean
    if aug.brightness:
        images = images + (_uniform(seed, 7, n, aug.brightness) * PIXEL_MAX)[:, None, None, None]
    if aug.noise:
        sub = tf.random.experimental.stateless_fold_in(seed, 8)
        images = images + tf.random.stateless_normal(tf.shape(images), sub, stddev=aug.noise)
    return tf.clip_by_value(images, 0.0, PIXEL_MAX)


def is_identity(aug: AugmentParams) -> bool:
    """True when every transform is off (the batch would come back unchanged)."""
    return not (aug.rotation or aug.zoom or aug.translation or aug.contrast or aug.brightness or aug.noise or aug.flip)
