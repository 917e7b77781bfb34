"""OpenVLA's training image augmentation (``image_aug``), seeded per frame so that a resumed run sees the same images.

Recipe (openvla/openvla ``vla-scripts/finetune.py`` ``image_aug=True`` ->
``prismatic/vla/datasets/datasets.py`` ``image_augment_kwargs``, applied by dlimp's ``augment_image``,
kvablack/dlimp ``dlimp/augmentations.py``), in this order, on the 224 x 224 training image after decode
and resize (``prismatic/vla/datasets/rlds/dataset.py`` ``apply_frame_transforms``):

1. ``random_resized_crop``: scale [0.9, 0.9] (90% of the area), ratio [1.0, 1.0] (square), resized back to
   224 x 224 with ``tf.image.crop_and_resize`` (bilinear);
2. ``random_brightness`` max delta 0.2; 3. ``random_contrast`` [0.8, 1.2]; 4. ``random_saturation``
   [0.8, 1.2]; 5. ``random_hue`` max delta 0.05;

all on float32 images in [0, 1] (``tf.image.convert_image_dtype``), clipped to [0, 1] after every op, and
converted back to uint8 with ``saturate=True``. As in dlimp, ONE seed feeds every op, including the four
uniform draws of the crop (scale, ratio, height offset, width offset): the crop offset is therefore the same
fraction of the free margin on both axes. We keep that, to train on the distribution OpenVLA trains on.

Seeds: OpenVLA draws a fresh random seed per frame (``tf.random.uniform``). Here the seed of a frame is
``(aug_seed, ordinal)``: ``aug_seed`` is derived from the run's seed, rank and source, ``ordinal`` is the
frame's position in its source's stream, so the same run (and a resumed run, which skips to the same
ordinal) augments every frame identically. Evaluation of an augmented checkpoint centre-crops 90% of the
area (:meth:`vlamix.model.processor.VLAProcessor.center_crop`, OpenVLA's ``crop_and_resize``); the
checkpoint records ``image_aug`` so that evaluation follows it.

TensorFlow is imported by the caller (:mod:`vlamix.data.mixture`) and passed in; this module never imports it.
"""

from __future__ import annotations

from typing import Any

#: OpenVLA's ``image_augment_kwargs`` (prismatic/vla/datasets/datasets.py), as data.
OPENVLA_IMAGE_AUG: dict[str, Any] = {
    "random_resized_crop": {"scale": (0.9, 0.9), "ratio": (1.0, 1.0)},
    "random_brightness": (0.2,),
    "random_contrast": (0.8, 1.2),
    "random_saturation": (0.8, 1.2),
    "random_hue": (0.05,),
    "augment_order": ("random_resized_crop", "random_brightness", "random_contrast", "random_saturation", "random_hue"),
}


def _random_resized_crop(tf, image, seed, scale, ratio):
    """float32 [H, W, 3] -> float32 [H, W, 3]: dlimp's crop (keras NNCLR recipe) with one shared seed."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    log_ratio = (tf.math.log(float(ratio[0])), tf.math.log(float(ratio[1])))
    s = tf.random.stateless_uniform((1,), seed, float(scale[0]), float(scale[1]))
    r = tf.exp(tf.random.stateless_uniform((1,), seed, log_ratio[0], log_ratio[1]))
    new_h = tf.clip_by_value(tf.sqrt(s / r), 0.0, 1.0)
    new_w = tf.clip_by_value(tf.sqrt(s * r), 0.0, 1.0)
    off_h = tf.random.stateless_uniform((1,), seed, 0.0, 1.0 - new_h)
    off_w = tf.random.stateless_uniform((1,), seed, 0.0, 1.0 - new_w)
    boxes = tf.stack([off_h, off_w, off_h + new_h, off_w + new_w], axis=1)  # [1, 4] normalised (y1, x1, y2, x2)
    return tf.image.crop_and_resize(image[None], boxes, tf.zeros((1,), tf.int32), (height, width))[0]


def augment_image(tf, image, seed, recipe: dict[str, Any] = OPENVLA_IMAGE_AUG):
    """One training image through OpenVLA's augmentation.

    Args:
        tf: the TensorFlow module.
        image: uint8 tensor [H, W, 3] (RGB, after resize).
        seed: int tensor [2], the stateless seed of this frame.
        recipe: ops and parameters (:data:`OPENVLA_IMAGE_AUG`).
    Returns:
        uint8 tensor [H, W, 3].
    Raises:
        ValueError: an op of ``augment_order`` this module does not implement.
    """
    ops = {
        "random_resized_crop": lambda x: _random_resized_crop(tf, x, seed, **recipe["random_resized_crop"]),
        "random_brightness": lambda x: tf.image.stateless_random_brightness(x, *recipe["random_brightness"], seed=seed),
        "random_contrast": lambda x: tf.image.stateless_random_contrast(x, *recipe["random_contrast"], seed=seed),
        "random_saturation": lambda x: tf.image.stateless_random_saturation(x, *recipe["random_saturation"], seed=seed),
        "random_hue": lambda x: tf.image.stateless_random_hue(x, *recipe["random_hue"], seed=seed),
    }
    unknown = [op for op in recipe["augment_order"] if op not in ops]
    if unknown:
        raise ValueError(f"augment_order: {unknown} not implemented; allowed: {', '.join(ops)}")
    x = tf.image.convert_image_dtype(image, tf.float32)
    for op in recipe["augment_order"]:
        x = tf.clip_by_value(ops[op](x), 0.0, 1.0)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True)
