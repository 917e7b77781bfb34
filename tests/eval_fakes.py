"""Test-only stand-ins for the rollout runtime: a fake env slot (no simulator) and a fake policy.

Spawned env workers import this module by name, so it stays light (NumPy only, no torch) and at
the top level of ``tests/``.

FakeSlot: episode ``(task t, trial k)`` succeeds after ``length(t, k) = 2 + (3k + t) % 5`` steps
if every action it receives is the one :class:`ImagePolicy` computes from its image; a wrong action
makes it never succeed. ``faults`` maps an episode key ``"task/trial"`` to one fault, done once
(a marker file in ``marker_dir`` remembers it across worker processes) or always:
``"kill@N"`` (the worker SIGKILLs itself at step N), ``"hang@N"`` (sleeps forever at step N),
``"raise@N"`` (env.step raises), each with an optional ``:always`` suffix.
"""

import os
import signal
import time

import numpy as np

SIZE = 64


def episode_length(task_id, trial):
    return 2 + (3 * trial + task_id) % 5


def image_of(task_id, trial, t):
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = task_id * 10
    img[..., 1] = trial * 7 % 256
    img[..., 2] = t * 13 % 256
    return img


def expected_action(image):
    v = image.reshape(-1, 3)[0].astype(np.float64) / 255.0
    return np.array([v[0], v[1], v[2], 0.0, 0.0, 0.0, 1.0])


class FakeSlot:
    def __init__(self, faults, marker_dir):
        self.faults = dict(faults)
        self.marker_dir = marker_dir
        self.frame = None
        self.physics_s = self.render_s = self.preprocess_s = 0.0

    def begin(self, spec):
        self.spec, self.t, self.ok = spec, 0, True
        self.fault = None
        name = f"{spec.task_id}/{spec.episode_index}"
        if name in self.faults:
            kind, _, always = self.faults[name].partition(":")
            marker = os.path.join(self.marker_dir, name.replace("/", "_") + ".done")
            if always or not os.path.exists(marker):
                open(marker, "w").close()
                self.fault = kind
        self.frame = image_of(spec.task_id, spec.episode_index, 0)
        return self.frame

    def step(self, action):
        self.ok = self.ok and np.allclose(action, expected_action(self.frame))
        self.t += 1
        self.physics_s += 0.001
        if self.fault:
            kind, at = self.fault.split("@")
            if self.t == int(at):
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if kind == "hang":
                    time.sleep(3600)
                if kind == "raise":
                    raise RuntimeError("fake physics exploded")
        self.frame = image_of(self.spec.task_id, self.spec.episode_index, self.t)
        done = self.ok and self.t >= episode_length(self.spec.task_id, self.spec.episode_index)
        return self.frame, done

    def close(self):
        pass


def env_action_of(task_id, trial, t):
    """The action a :class:`StateSlot` proposes at step ``t``, in the environment's convention (gripper -1 / +1)."""
    return np.array([0.01 * task_id, 0.02 * trial, -0.03 * t, 0.1, -0.2, 0.3, 1.0 if (t + trial) % 3 == 0 else -1.0],
                    dtype=np.float32)


class StateSlot(FakeSlot):
    """A FakeSlot that, like the scripted expert's slot, sends a privileged ``state`` with each image:
    ``{"expert_action": env_action_of(...)}``; an episode succeeds after ``episode_length`` steps only if
    every action, post-processed for the environment (``model_to_env_action``), is exactly the proposed one.
    ``executed`` keeps the environment actions it got. ``fail`` maps ``(task, trial)`` to the step at which
    the state carries an expert error (``{"expert_error": ...}``) instead of an action."""

    def __init__(self, faults, marker_dir, fail=()):
        super().__init__(faults, marker_dir)
        self.fail = dict(fail)

    def _propose(self):
        key = (self.spec.task_id, self.spec.episode_index)
        if self.fail.get(key) == self.t:
            self.state = {"expert_error": "UnsupportedTaskError: no primitive for this goal"}
        else:
            self.state = {"expert_action": env_action_of(*key, self.t).tolist()}

    def begin(self, spec):
        image = super().begin(spec)
        self.executed = []
        self._propose()
        return image

    def step(self, action):
        from vlamix.eval.envs import model_to_env_action

        env_action = model_to_env_action(action)
        self.executed.append(env_action)
        proposed = np.asarray(self.state["expert_action"], dtype=np.float64)
        self.ok = self.ok and np.array_equal(env_action, proposed)
        self.t += 1
        self.frame = image_of(self.spec.task_id, self.spec.episode_index, self.t)
        self._propose()
        return self.frame, self.ok and self.t >= episode_length(self.spec.task_id, self.spec.episode_index)


def make_state_slot(settings, fail=()):
    return StateSlot({}, None, fail)


def make_fake_slot(settings, faults=(), marker_dir=None):
    return FakeSlot(dict(faults), marker_dir)


class ImagePolicy:
    """act: one action per image, computed from its first pixel (so the env can check it got its own)."""

    def __init__(self):
        self.batches, self.suites = [], []

    def act(self, images, instructions, suite):
        self.batches.append(len(images))
        self.suites.append(suite)
        return np.stack([expected_action(im) for im in images])


def batch1_rows(checkpoint, specs, max_steps):
    """The batch-1 reference loop in this (spawned) process: VLAPolicy fp32 on the CPU + one LiberoSlot."""
    from vlamix.eval.envs import LiberoSlot
    from vlamix.eval.policy import VLAPolicy
    from vlamix.eval.rollout import run_episode

    policy = VLAPolicy(checkpoint, device="cpu", dtype="fp32")
    slot = LiberoSlot()
    try:
        return [run_episode(slot, policy, spec, max_steps) for spec in specs]
    finally:
        slot.close()


def make_env_recording_slot(settings, marker_dir=None):
    """A FakeSlot that first writes the worker's LP_NUM_THREADS to ``<marker_dir>/lp_<pid>``."""
    with open(os.path.join(marker_dir, f"lp_{os.getpid()}"), "w") as fh:
        fh.write(os.environ.get("LP_NUM_THREADS", ""))
    return FakeSlot({}, marker_dir)


class BrightSlot:
    """Env slot without a simulator that never succeeds: 224 px images, all dark (< 40) for ``dark_tasks``, bright otherwise."""

    def __init__(self, dark_tasks):
        self.dark_tasks = tuple(dark_tasks)
        self.physics_s = self.render_s = self.preprocess_s = 0.0

    def _image(self):
        rng = np.random.default_rng(self.spec.task_id * 100 + self.t)
        low, high = (0, 40) if self.spec.task_id in self.dark_tasks else (100, 256)
        return rng.integers(low, high, (224, 224, 3), dtype=np.uint8)

    def begin(self, spec):
        self.spec, self.t = spec, 0
        return self._image()

    def step(self, action):
        self.t += 1
        return self._image(), False

    def close(self):
        pass


def make_bright_slot(settings, dark_tasks=()):
    return BrightSlot(dark_tasks)


def batch1_expert_rows(specs, max_steps, seed=7):
    """The batch-1 loop (``run_episode``) with the scripted expert as the policy, in this (spawned) process;
    each row also has ``actions``: float32 [steps, 7], the model-space actions the loop executed."""
    from vlamix.eval.expert_policy import ExpertPolicy, ExpertSlot
    from vlamix.eval.rollout import run_episode

    class Recorded(ExpertPolicy):
        def act(self, *args, **kwargs):
            out = super().act(*args, **kwargs)
            actions.append(out[0].astype(np.float32))
            return out

    slot, rows = ExpertSlot(seed=seed), []
    try:
        for spec in specs:
            actions = []
            row = run_episode(slot, Recorded(), spec, max_steps)
            rows.append({**row, "actions": np.array(actions, dtype=np.float32).reshape(-1, 7)})
        return rows
    finally:
        slot.close()


# ------------------------------------------------------------------------------ action chunks (OpenVLA-OFT)
CHUNK = 4


def proprio_of(task_id, trial, t):
    """The fake raw 8-D state of step ``t``."""
    return np.array([t, task_id, trial, 0, 0, 0, 0, 0], dtype=np.float32)


def chunk_of(image, wrist, proprio):
    """The chunk :class:`ChunkPolicy` computes: step j of it is ``expected_action(image)`` with dim 3 = j and dim 4
    = the observation's step (from proprio), dim 5 = 1 if the wrist image is the one of that frame."""
    out = np.repeat(expected_action(image)[None], CHUNK, axis=0)
    out[:, 3] = np.arange(CHUNK)
    out[:, 4] = proprio[0]
    out[:, 5] = float(np.array_equal(wrist, 255 - image))
    return out


class ChunkPolicy:
    """act_chunk: CHUNK actions per observation from the image, the wrist image and the proprio (``inputs``)."""

    action_chunk = CHUNK
    inputs = ("wrist_image", "proprio")

    def __init__(self):
        self.calls = 0

    def act(self, images, instructions, suite):
        raise AssertionError("a chunk policy is queried through act_chunk")

    def act_chunk(self, images, instructions, suite, wrist_images=None, proprio=None):
        self.calls += 1
        return np.stack([chunk_of(im, w, p) for im, w, p in zip(images, wrist_images, proprio)])


class ChunkSlot(FakeSlot):
    """A FakeSlot for chunks executed ``k`` actions per observation: step ``t`` must get action ``t % k`` of the
    chunk of the observation at step ``t - t % k``, which must have been computed from that observation's image,
    wrist image and proprio, and only the observations a query reads may be asked for (``observe``), so an episode
    succeeds only if the server runs exactly ``k`` actions per query and renders only what the policy reads."""

    def __init__(self, k):
        super().__init__({}, None)
        self.k = k

    def _observe(self):
        self.frame = image_of(self.spec.task_id, self.spec.episode_index, self.t)
        state = proprio_of(self.spec.task_id, self.spec.episode_index, self.t)
        self.extras = {"wrist_image": 255 - self.frame, "proprio": state}
        if self.t % self.k == 0:
            self.query = chunk_of(self.frame, self.extras["wrist_image"], self.extras["proprio"])
        return self.frame

    def begin(self, spec):
        self.spec, self.t, self.ok, self.observed = spec, 0, True, 0
        return self._observe()

    def step(self, action, observe=True):
        self.ok = self.ok and np.allclose(action, self.query[self.t % self.k]) and action[5] == 1.0
        # only the observation the next query reads is asked for (render on demand)
        self.ok = self.ok and observe == ((self.t + 1) % self.k == 0)
        self.t += 1
        self.observed += int(observe)
        frame = self._observe() if observe else None
        return frame, self.ok and self.t >= episode_length(self.spec.task_id, self.spec.episode_index)


def make_chunk_slot(settings, k=1):
    assert tuple(settings["inputs"]) == ChunkPolicy.inputs  # the server asks the env for what the policy reads
    return ChunkSlot(k)


def chunked_libero_run(spec, actions, k, lazy):
    """One LIBERO episode (wrist image and proprio on) stepped with ``actions``, reading the observation after every
    ``k``-th step; ``lazy``: the other steps with ``observe=False``. Returns ([(image, extras) read], renders after
    the wait steps)."""
    from vlamix.eval.envs import LiberoSlot

    slot = LiberoSlot(inputs=("wrist_image", "proprio"))
    try:
        seen = [(slot.begin(spec), dict(slot.extras))]
        after_wait = slot.renders
        for t, action in enumerate(actions):
            observe = not lazy or (t + 1) % k == 0
            image, done = slot.step(action, observe=observe)
            assert (image is None) == (not observe) and not done
            if (t + 1) % k == 0:
                seen.append((image, dict(slot.extras)))
        return seen, slot.renders - after_wait
    finally:
        slot.close()
