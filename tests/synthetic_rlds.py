"""Synthetic episodes in the format of ``vlamix.data.rlds_writer.write_rlds`` (tests only)."""

import numpy as np


def block_images(rng, steps, blocks=4):
    """uint8 [T, 256, 256, 3] of ``blocks x blocks`` flat squares (JPEG keeps them within a few levels)."""
    small = rng.integers(0, 256, (steps, blocks, blocks, 3), dtype=np.uint8)
    size = 256 // blocks
    return np.repeat(np.repeat(small, size, axis=1), size, axis=2)


def synthetic_episode(rng, steps, instruction, file_path, *, blocks=4, action_scale=1.0):
    """One episode: block images (wrist = agent view), state ~ N(0, 1) [T, 8], joint state 0 [T, 7],
    actions ~ U(-1, 1) * ``action_scale`` [T, 7] with the gripper (last dim) in {-1, +1}."""
    image = block_images(rng, steps, blocks)
    action = rng.uniform(-1, 1, (steps, 7)).astype(np.float32) * np.float32(action_scale)
    action[:, 6] = np.where(rng.random(steps) < 0.5, -1.0, 1.0)
    return {
        "image": image,
        "wrist_image": image,
        "state": rng.normal(size=(steps, 8)).astype(np.float32),
        "joint_state": np.zeros((steps, 7), np.float32),
        "action": action,
        "language_instruction": instruction,
        "file_path": file_path,
    }


def write_datasets(root, lengths, episodes):
    """Write one RLDS dataset per name of ``lengths`` ({name: [steps per episode]}) into ``root``, its episodes
    from ``episodes(name, steps_list)``. Returns ``str(root)``."""
    from vlamix.data.rlds_writer import write_rlds  # TensorFlow only when a test writes data

    for name, steps in lengths.items():
        write_rlds(episodes(name, steps), root, name)
    return str(root)
