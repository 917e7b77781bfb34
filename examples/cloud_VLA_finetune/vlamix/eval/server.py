"""The policy side of rollouts: one batched policy in this process drives the env slots of many workers.

:class:`BatchedRollout` runs planned episodes on ``workers x envs_per_worker`` env slots
(:mod:`vlamix.eval.envs`) in lock-step rounds. Each round:

1. every free slot takes the next planned episode (slot order, plan order): a ``begin`` command;
   every running episode gets a ``step`` command with the action chosen last round;
2. the commands go to the workers, which execute them in parallel and answer;
3. episodes that ended (success, step limit, error) become rows; the policy images of all other
   episodes go to the policy as ONE batch, whatever their task suites (``policy.act(images uint8
   [B, 224, 224, 3], instructions, suite or suites)``, :func:`call_policy`), and the actions come back
   for the next round. A slot may send a privileged observation with its image (``state``: plain
   numbers; the scripted expert's slot sends the action its expert computed from the simulator,
   :mod:`vlamix.eval.expert_policy`); it goes to policies that declare ``uses_state``.

**Action chunks** (``open_loop_steps`` > 1 or a policy with ``inputs``, e.g. OpenVLA-OFT): the call is
``policy.act_chunk(images, instructions, suite(s), wrist_images=..., proprio=...) -> [B, chunk, 7]`` and
an episode executes the first ``open_loop_steps`` actions of its chunk, one per round, before its next
observation goes to the policy: exactly one policy query per ``open_loop_steps`` environment steps
(moojink/openvla-oft ``experiments/robot/libero/run_libero_eval.py``: a deque refilled only when
empty). The step commands of those open-loop actions carry ``observe=False`` (unless the episode
records a video), so the workers render only the observations the policy reads.

**Double buffering** (``envs_per_worker >= 2``): a worker's slots form two fixed groups (even and
odd slot index within the worker), and the rounds alternate between them: while the workers step
group A's environments, this process runs the policy on group B's images that came back in the
previous round, and the other way round. Every worker steps one group per round and the policy is
never waited for while an environment could step (the lock-step loop leaves the workers idle during
every policy call: 14% of the wall time with the tiny model on 2 CPU cores, more with a 7B model on a
GPU). The same idea as Sample Factory's double-buffered sampling (Petrenko et al. 2020, "Sample
Factory", Section 3.2). With one env per worker the rounds are lock-step (all slots each round).

Which episode runs in which slot follows only the plan and the episodes' step counts, never timing,
and every episode re-seeds its environment, so rows do not depend on scheduling. The idea follows
LeRobot's vectorised LIBERO evaluation (huggingface/lerobot ``scripts/lerobot_eval.py``: N envs, one
policy call per step on the whole batch) and openpi's policy server.

Faults: a worker that dies (its pipe closes) is replaced and its in-flight episodes are run again
from their init state. The per-episode limit ``episode_timeout_s`` counts the wall-clock seconds of
the episode's own environment work (env build, reset, steps, rendering; measured by its worker, so
a stall elsewhere in the batch or a slow policy never times out an innocent episode): a worker
whose current command pushes its episode past the limit is killed (SIGKILL) and replaced the same way. An exception in an environment is also retried. Each
retry of the episode that caused it counts as an attempt; after ``max_attempts`` the episode gets a
row with ``error`` set (not a policy failure). An exception in the policy is an error row at once.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vlamix.core.constants import ACTION_DIM
from vlamix.eval.envs import worker_main

logger = logging.getLogger(__name__)

#: Seconds to wait at most between liveness checks while a round is outstanding.
_POLL_S = 1.0
VIDEO_MODES = ("none", "failures", "all")


@dataclass
class _Episode:
    spec: Any
    attempt: int  # attempts already used before this one
    max_steps: int
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    policy_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    action: np.ndarray | None = None
    image: np.ndarray | None = None
    state: Any = None  # the slot's privileged observation with the image (None for image-only slots)
    extras: dict[str, Any] = field(default_factory=dict)  # the observation inputs the policy reads besides the image
    queue: deque = field(default_factory=deque)  # actions of the last chunk still to execute (open loop)
    queries: int = 0  # policy calls that served this episode
    video_tmp: str | None = None
    digest: Any = field(default_factory=hashlib.sha1)  # of the float32 actions executed
    max_batch: int = 0  # largest policy call this episode was served in
    env_s: float = 0.0  # seconds of this episode's commands in its worker (what the timeout limits)


@dataclass
class _Worker:
    index: int
    proc: Any
    conn: Any
    busy: Any  # shared doubles [slot running a command or -1, its start on the monotonic clock]


def policy_batch_size(workers: int, envs_per_worker: int) -> int:
    """The most images one policy call gets: ``workers * envs_per_worker`` in lock-step (one env per
    worker), half of them with double buffering (``envs_per_worker >= 2``: the policy acts on one slot
    group while the workers step the other). A job that wants batch 16 per call on the GPU therefore
    needs 32 env slots, e.g. 8 workers x 4 envs.

    Raises:
        ValueError: ``workers < 1``, or ``envs_per_worker`` not 1 or an even number (an odd number >= 3
            would split the slots into unequal groups, so every other call would be smaller than the other).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if isinstance(envs_per_worker, bool) or not isinstance(envs_per_worker, int) or envs_per_worker < 1 or (
            envs_per_worker > 1 and envs_per_worker % 2):
        raise ValueError(f"envs_per_worker must be 1 (lock-step) or an even number (double buffering), got {envs_per_worker!r}")
    return workers * envs_per_worker // (2 if envs_per_worker >= 2 else 1)


def call_policy(policy: Any, images: np.ndarray, specs: Sequence[Any], states: Sequence[Any] | None = None, *,
                extras: Mapping[str, Sequence[np.ndarray]] | None = None, chunk_steps: int | None = None) -> np.ndarray:
    """One policy call for the episodes ``specs``: the interface every rollout path (:class:`BatchedRollout`,
    the batch-1 loop :func:`vlamix.eval.rollout.run_episode`) uses.

    ``policy.act(images, instructions, suite)`` with ``suite`` one name when every episode is of the same
    suite, else one name per row; ``variants=[...]`` is added when some episode's ``instruction_variant`` is
    not "original", and ``states=[...]`` (the slots' privileged observations, :attr:`vlamix.eval.envs.LiberoSlot.state`)
    when the policy declares ``uses_state = True`` (the scripted expert, :mod:`vlamix.eval.expert_policy`).
    With ``chunk_steps`` (an action-chunk policy, OpenVLA-OFT): ``policy.act_chunk(...)`` instead, with the
    observation inputs of ``extras`` (``wrist_image`` -> ``wrist_images=``, ``proprio`` -> ``proprio=``, stacked).

    Args:
        images: uint8 [B, S, S, 3] policy images. specs: B episode specs. states: B slot states (or None).
        extras: {input name: B arrays} (wrist images uint8 [S, S, 3], proprio float32 [8]); chunk policies only.
        chunk_steps: actions of each chunk that will run (the chunk must hold at least that many); None: ``act``.
    Returns:
        float64 [B, 7] model-space actions, or float64 [B, chunk, 7] with ``chunk_steps``.
    Raises:
        ValueError: the policy returned another shape or a non-finite value; whatever ``act`` raises.
    """
    instructions = [spec.instruction for spec in specs]
    suites = [spec.suite for spec in specs]
    suite = suites[0] if len(set(suites)) == 1 else suites  # one name, or one per row
    kwargs: dict[str, Any] = {}
    variants = [getattr(spec, "instruction_variant", "original") for spec in specs]
    if any(v != "original" for v in variants):
        kwargs["variants"] = variants
    if getattr(policy, "uses_state", False) is True:
        kwargs["states"] = list(states) if states is not None else [None] * len(specs)
    if chunk_steps is not None:
        names = {"wrist_image": "wrist_images", "proprio": "proprio"}
        for name, values in (extras or {}).items():
            kwargs[names.get(name, name)] = np.stack(values)
        out = np.asarray(policy.act_chunk(images, instructions, suite, **kwargs), dtype=np.float64)
        expected = f"[{len(specs)}, >= {chunk_steps}, {ACTION_DIM}]"
        ok = out.ndim == 3 and out.shape[0] == len(specs) and out.shape[1] >= chunk_steps and out.shape[2] == ACTION_DIM
    else:
        out = np.asarray(policy.act(images, instructions, suite, **kwargs), dtype=np.float64)
        expected = f"[{len(specs)}, {ACTION_DIM}]"
        ok = out.shape == (len(specs), ACTION_DIM)
    if not ok or not np.all(np.isfinite(out)):
        raise ValueError(f"policy returned {list(out.shape)} (finite: {bool(np.all(np.isfinite(out)))}), "
                         f"expected finite float {expected}")
    return out


def video_name(spec: Any, success: bool) -> str:
    """File name of an episode video: ``<suite>__task<NN>__trial<NNN>[__<more key parts>]__<success|failure>.mp4``."""
    key = list(spec.key)
    parts = [str(key[0]), f"task{int(key[1]):02d}", f"trial{int(key[2]):03d}"] + [str(k) for k in key[3:]]
    stem = "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p) for p in parts)
    return f"{stem}__{'success' if success else 'failure'}.mp4"


class BatchedRollout:
    """Run episodes on env-worker processes with one batched policy in this process.

    Args:
        policy: object with ``act(images uint8 [B, S, S, 3], instructions list[str], suite) ->
            float [B, 7]`` (model-space actions), called through :func:`call_policy`; ``suite`` is one
            task-suite name when every row is of the same suite, else a list of B names (one call per round
            serves every waiting episode, so the batch is what the slots give); called with ``variants=[...]``
            as well when some episode's ``instruction_variant`` is not "original", and with ``states=[...]``
            (the slots' privileged observations) when it declares ``uses_state = True``.
        workers: env-worker processes (>= 1). envs_per_worker: env slots per worker (>= 1).
        settings: picklable dict for the workers (``slot_factory``, ``resolution``, ``seed``,
            ``num_steps_wait``, ``image_size``).
        max_steps_of: suite -> policy-step limit.
        row_base: spec -> the row fields that do not come from running (settings, device, ...).
        on_row: called with each finished row (dict), in completion order.
        max_attempts: runs of an episode before its row records the error (>= 1).
        episode_timeout_s: wall-clock seconds an episode may take (None: no limit).
        open_loop_steps: actions of each predicted chunk executed before the next query (1: ``act``, one
            action per observation, unless the policy reads ``inputs``).
        videos: "none" | "failures" | "all"; videos_per_task: MP4s kept per task at most;
        video_dir: where they go (required unless videos is "none").
        mp_context: multiprocessing context (default ``spawn``).
    Attributes: ``policy_batch`` (:func:`policy_batch_size`: the most images one policy call gets).
    After :meth:`run`: ``batch_log`` (one ``(batch_size, ended_this_round, pending)`` per
    round; with double buffering the batch is the other group's), ``assign_log`` (``(slot,
    spec.key, attempt)`` per begin), ``groups`` (the slot groups rounds alternate between: one group of
    all slots, or two with ``envs_per_worker >= 2``), ``policy_s``, ``env_s`` (seconds waiting for
    workers), ``rounds``, ``restarts``.
    """

    def __init__(
        self,
        policy: Any,
        *,
        workers: int,
        envs_per_worker: int,
        settings: dict[str, Any],
        max_steps_of: Callable[[str], int],
        row_base: Callable[[Any], dict[str, Any]],
        on_row: Callable[[dict[str, Any]], None],
        max_attempts: int = 2,
        episode_timeout_s: float | None = None,
        videos: str = "none",
        videos_per_task: int = 0,
        video_dir: str | None = None,
        mp_context: Any = None,
        open_loop_steps: int = 1,
    ):
        if isinstance(open_loop_steps, bool) or not isinstance(open_loop_steps, int) or open_loop_steps < 1:
            raise ValueError(f"open_loop_steps must be an integer >= 1, got {open_loop_steps!r}")
        chunk = int(getattr(policy, "action_chunk", 1))
        if open_loop_steps > chunk:
            raise ValueError(f"open_loop_steps {open_loop_steps} > the policy's action_chunk {chunk}")
        if videos not in VIDEO_MODES:
            raise ValueError(f"videos must be one of {', '.join(VIDEO_MODES)}, got {videos!r}")
        if videos != "none" and not video_dir:
            raise ValueError("videos need a video_dir")
        self.policy = policy
        self.open_loop_steps = open_loop_steps
        self.inputs = tuple(getattr(policy, "inputs", ()))
        self.chunked = open_loop_steps > 1 or bool(self.inputs)
        self.n_workers, self.envs_per_worker = int(workers), int(envs_per_worker)
        self.policy_batch = policy_batch_size(self.n_workers, self.envs_per_worker)
        self.n_slots = self.n_workers * self.envs_per_worker
        self.settings = settings
        self.max_steps_of, self.row_base, self.on_row = max_steps_of, row_base, on_row
        self.max_attempts = int(max_attempts)
        self.timeout = episode_timeout_s
        self.videos, self.videos_per_task, self.video_dir = videos, int(videos_per_task), video_dir
        self.ctx = mp_context or multiprocessing.get_context("spawn")
        self.batch_log: list[tuple[int, int, int]] = []
        self.assign_log: list[tuple[int, Any, int]] = []
        self.policy_s = self.env_s = 0.0
        self.rounds = self.restarts = 0
        self._videos_kept: dict[tuple[str, int], int] = {}
        self._workers: dict[int, _Worker] = {}
        self._slots: list[_Episode | None] = [None] * self.n_slots
        self._ends: dict[int, list[tuple[int, str, Any]]] = {}
        n_groups = 2 if self.envs_per_worker >= 2 else 1
        self.groups: list[list[int]] = [[s for s in range(self.n_slots) if (s % self.envs_per_worker) % n_groups == g]
                                        for g in range(n_groups)]

    # ------------------------------------------------------------------ workers
    def _start_worker(self, index: int) -> None:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        busy = self.ctx.Array("d", [-1.0, 0.0], lock=False)
        proc = self.ctx.Process(target=worker_main, name=f"vlamix-env-{index}", daemon=True,
                                args=(index, child_conn, self.envs_per_worker, self.settings, os.getpid(), busy))
        proc.start()
        child_conn.close()
        self._workers[index] = _Worker(index, proc, parent_conn, busy)
        logger.info("started env worker %d (pid %d, %d env slots)", index, proc.pid, self.envs_per_worker)

    def _stop_worker(self, index: int, kill: bool) -> None:
        w = self._workers.pop(index)
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=10)
        try:
            w.conn.close()
        except OSError:
            pass

    def _replace_worker(self, index: int, why: str) -> None:
        self._stop_worker(index, kill=True)
        self.restarts += 1
        if self.restarts > self._max_restarts:
            raise RuntimeError(f"env workers were replaced {self.restarts} times (last: {why}); giving up")
        logger.error("env worker %d: %s; replacing it and rerunning its in-flight episodes", index, why)
        self._start_worker(index)

    def _slot_range(self, index: int) -> range:
        return range(index * self.envs_per_worker, (index + 1) * self.envs_per_worker)

    # ------------------------------------------------------------------ episodes
    def _begin(self, slot: int, spec: Any, attempt: int) -> tuple[str, Any]:
        ep = _Episode(spec, attempt, self.max_steps_of(spec.suite))
        if self.videos != "none" and self._videos_kept.get((spec.suite, spec.task_id), 0) < self.videos_per_task:
            ep.video_tmp = os.path.join(self.video_dir, f".tmp-{slot}-{video_name(spec, False)}")
        self._slots[slot] = ep
        self.assign_log.append((slot, spec.key, attempt))
        return "begin", (spec, ep.video_tmp)

    def _finish(self, slot: int, success: bool, error: str | None) -> None:
        ep = self._slots[slot]
        self._slots[slot] = None
        video = None
        if ep.video_tmp is not None:
            task = (ep.spec.suite, ep.spec.task_id)
            keep = error is None and (self.videos == "all" or not success) and \
                self._videos_kept.get(task, 0) < self.videos_per_task
            final = os.path.join(self.video_dir, video_name(ep.spec, success)) if keep else None
            if keep:
                self._videos_kept[task] = self._videos_kept.get(task, 0) + 1
                video = final
            self._ends.setdefault(slot // self.envs_per_worker, []).append((slot % self.envs_per_worker, "end", final))
        t = ep.timings
        row = {**asdict(ep.spec), **self.row_base(ep.spec), "success": bool(success), "steps": ep.steps,
               "max_steps": ep.max_steps, "action_digest": ep.digest.hexdigest()[:16], "error": error,
               "attempts": ep.attempt + 1, "batch_size": ep.max_batch, "policy_queries": ep.queries,
               "policy_batch": self.policy_batch,
               "env_slots": self.n_slots, "video": video, "wall_s": round(time.monotonic() - ep.started, 4), "policy_s": round(ep.policy_s, 4),
               "sim_s": round(t.get("physics_s", 0.0) + t.get("render_s", 0.0), 4),
               "physics_s": round(t.get("physics_s", 0.0), 4), "render_s": round(t.get("render_s", 0.0), 4),
               "preprocess_s": round(t.get("preprocess_s", 0.0), 4), "renders": int(t.get("renders", 0))}
        self._n_done += 1
        self.on_row(row)

    def _retry(self, slot: int, error: str, counted: bool, retries: list[tuple[Any, int]], alive: bool = True) -> None:
        """End the slot's episode without a row and queue it again, or record ``error`` after the last attempt.

        ``alive``: the slot's worker still runs (its open video is closed and deleted by an ``end``
        command); otherwise the parent deletes the partial video file.
        """
        ep = self._slots[slot]
        if ep.video_tmp is not None:
            if alive:
                self._ends.setdefault(slot // self.envs_per_worker, []).append((slot % self.envs_per_worker, "end", None))
            elif os.path.exists(ep.video_tmp):
                try:
                    os.remove(ep.video_tmp)
                except OSError:
                    pass
            ep.video_tmp = None
        attempt = ep.attempt + (1 if counted else 0)
        if attempt < self.max_attempts:
            logger.warning("episode %s: %s; running it again (attempt %d of %d)", ep.spec.key, error, attempt + 1,
                           self.max_attempts)
            self._slots[slot] = None
            retries.append((ep.spec, attempt))
        else:
            ep.attempt = attempt - 1
            logger.error("episode %s: %s after %d attempts; recorded as an error, not as a policy failure",
                         ep.spec.key, error, attempt)
            self._finish(slot, False, f"{error} (attempt {attempt} of {self.max_attempts})")

    # ------------------------------------------------------------------ main loop
    def run(self, specs: Sequence[Any]) -> None:
        """Run every spec once (reruns after faults aside); rows go to ``on_row``.

        Raises:
            RuntimeError: a worker reports a fatal start-up error, or workers keep dying
                (more than ``2 x episodes x max_attempts + workers`` replacements).
            KeyboardInterrupt: passes through after the workers are stopped (finished rows are kept).
        """
        pending: deque[tuple[Any, int]] = deque((s, 0) for s in specs)
        self._max_restarts = 2 * len(pending) * self.max_attempts + self.n_workers
        self._n_done = 0
        n_workers = min(self.n_workers, max(1, -(-len(pending) // self.envs_per_worker)))
        try:
            for index in range(n_workers):
                self._start_worker(index)
            n_groups = len(self.groups)
            while pending or any(ep is not None for ep in self._slots):
                group = self.groups[self.rounds % n_groups]
                cmds: dict[int, list[tuple[int, str, Any]]] = {i: list(self._ends.pop(i, [])) for i in self._workers}
                self._ends.clear()
                for slot in group:
                    index = slot // self.envs_per_worker
                    if index not in self._workers:
                        continue
                    ep = self._slots[slot]
                    if ep is None and pending:
                        spec, attempt = pending.popleft()
                        cmds[index].append((slot % self.envs_per_worker, *self._begin(slot, spec, attempt)))
                    elif ep is not None and ep.action is not None:
                        # an open-loop step's observation is not read: the worker need not render it
                        arg = (ep.action, False) if ep.queue else ep.action
                        cmds[index].append((slot % self.envs_per_worker, "step", arg))
                n_pending = len(pending)
                retries: list[tuple[Any, int]] = []
                waiting = self._send(cmds, retries)
                if n_groups > 1:  # the policy works on the other group while this one steps
                    other = self.groups[(self.rounds + 1) % n_groups]
                    batch = self._act(other)
                    ended = self._collect(waiting, retries)
                else:
                    ended = self._collect(waiting, retries)
                    batch = self._act(group)
                pending.extendleft(reversed(retries))
                self.batch_log.append((batch, ended, n_pending))
                self.rounds += 1
            final = {i: list(self._ends.pop(i, [])) for i in self._workers}
            self._ends.clear()
            if any(final.values()):
                self._collect(self._send(final, []), [])
            for w in self._workers.values():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            for w in self._workers.values():
                w.proc.join(timeout=10)  # let them close their environments
        finally:
            for index in list(self._workers):
                self._stop_worker(index, kill=True)
            for ep in self._slots:
                if ep is not None and ep.video_tmp and os.path.exists(ep.video_tmp):
                    os.remove(ep.video_tmp)

    def _send(self, cmds: dict[int, list[tuple[int, str, Any]]], retries: list[tuple[Any, int]]) -> dict[int, list]:
        """Send each worker its commands (non-blocking for the workers). Returns the workers to collect from."""
        waiting: dict[int, list[tuple[int, str, Any]]] = {}
        for index, lst in cmds.items():
            if not lst:
                continue
            try:
                self._workers[index].conn.send(lst)
                waiting[index] = lst
            except (OSError, BrokenPipeError):
                self._worker_lost(index, "its pipe is closed", retries)
        return waiting

    def _collect(self, waiting: dict[int, list], retries: list[tuple[Any, int]]) -> int:
        """Wait for the answers of ``waiting`` workers and apply them. Returns episodes ended this round."""
        t0 = time.monotonic()
        done_before = self._n_done
        replies: dict[int, list[dict[str, Any]]] = {}  # applied in worker order, not arrival order
        while waiting:
            wait_s = _POLL_S
            if self.timeout is not None:
                for index in waiting:
                    left = self._hung_for(index)
                    if left is not None:
                        wait_s = min(wait_s, max(0.0, self.timeout - left))
            handles = {}
            for index in waiting:
                w = self._workers[index]
                handles[w.conn] = index
                handles[w.proc.sentinel] = index
            ready = wait(list(handles), timeout=wait_s)
            for index in {handles[h] for h in ready}:
                if index not in waiting:
                    continue
                w = self._workers[index]
                try:
                    msg = w.conn.recv() if w.conn.poll() else None
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    if w.proc.is_alive() and not w.conn.poll(0.5):
                        continue  # spurious wake-up
                    waiting.pop(index)
                    w.proc.join(timeout=5)
                    slot = int(w.busy[0])
                    self._worker_lost(index, f"died (exit code {w.proc.exitcode})", retries,
                                      culprit=index * self.envs_per_worker + slot if slot >= 0 else None)
                    continue
                kind, payload = msg
                if kind == "fatal":
                    raise RuntimeError(f"env worker {index} could not start:\n{payload}")
                waiting.pop(index)
                replies[index] = payload
            if self.timeout is not None:
                for index in list(waiting):
                    used = self._hung_for(index)
                    if used is not None and used > self.timeout:
                        culprit = index * self.envs_per_worker + int(self._workers[index].busy[0])
                        waiting.pop(index)
                        self._worker_lost(index, f"episode {self._slots[culprit].spec.key} exceeded the "
                                          f"{self.timeout:g} s limit", retries, culprit=culprit)
        for index in sorted(replies):
            self._apply(index, replies[index], retries)
        if self.timeout is not None:  # episodes whose env work was slow but answered
            for slot, ep in enumerate(self._slots):
                if ep is not None and ep.env_s > self.timeout:
                    self._retry(slot, f"EpisodeTimeout: its environment took {ep.env_s:.1f} s > the {self.timeout:g} s "
                                "limit", True, retries)
        self.env_s += time.monotonic() - t0
        return self._n_done - done_before

    def _hung_for(self, index: int) -> float | None:
        """Env seconds of the episode whose command the worker is running now (None: none is running)."""
        busy = self._workers[index].busy
        slot = int(busy[0])
        ep = self._slots[index * self.envs_per_worker + slot] if slot >= 0 else None
        return None if ep is None else ep.env_s + time.monotonic() - busy[1]

    def _worker_lost(self, index: int, why: str, retries: list, culprit: int | None = None) -> None:
        """Rerun the worker's in-flight episodes and replace it. Only ``culprit`` (the episode whose
        command was running when the worker hung or died) uses up an attempt; when it is unknown
        (None), every in-flight episode does."""
        kind = "EpisodeTimeout" if "exceeded" in why else "WorkerDied"
        for slot in self._slot_range(index):
            if self._slots[slot] is not None:
                blame = culprit is None or slot == culprit
                self._retry(slot, f"{kind}: env worker {index} {why}", blame, retries, alive=False)
        self._ends.pop(index, None)  # the replacement has no videos open
        self._replace_worker(index, why)

    def _apply(self, index: int, results: list[dict[str, Any]], retries: list) -> None:
        base = index * self.envs_per_worker
        for res in results:
            if res["op"] == "end":
                continue
            slot = base + res["slot"]
            ep = self._slots[slot]
            if ep is None:
                continue
            ep.timings = {k: res.get(k, 0.0) for k in ("physics_s", "render_s", "preprocess_s", "renders")}
            ep.env_s += res.get("cmd_s", 0.0)
            if res["error"] is not None:
                self._retry(slot, f"EnvError: {res['error']}", True, retries)
                continue
            if res["op"] == "step":
                ep.steps += 1
                if res["done"]:
                    self._finish(slot, True, None)
                    continue
                if ep.steps >= ep.max_steps:
                    self._finish(slot, False, None)
                    continue
            if ep.queue:  # open loop: the next action of the chunk, no policy query
                self._execute(ep, ep.queue.popleft())
                continue
            ep.image, ep.state = res["image"], res.get("state")
            ep.extras = {name: res.get(name) for name in self.inputs}
            ep.action = None

    @staticmethod
    def _execute(ep: _Episode, action: np.ndarray) -> None:
        """Make ``action`` the episode's next environment step (and part of its action digest)."""
        ep.action = action
        ep.digest.update(np.asarray(action, dtype=np.float32).tobytes())

    def _act(self, slots: Sequence[int]) -> int:
        """ONE policy call on the episodes of ``slots`` waiting for an action, whatever their suites (the policy
        un-normalises each row with its suite's statistics). Returns the batch size."""
        waiting = [s for s in slots if (ep := self._slots[s]) is not None and ep.action is None and ep.image is not None]
        if not waiting:
            return 0
        t0 = time.perf_counter()
        try:
            actions = self._call(waiting)
        except Exception as err:  # noqa: BLE001 - isolate the episode that fails
            logger.error("batched policy call failed (%s: %s); calling it per episode", type(err).__name__, err)
            actions = []
            for slot in waiting:
                try:
                    actions.append(self._call([slot])[0])
                except Exception as one:  # noqa: BLE001
                    logger.error("policy failed on episode %s:\n%s", self._slots[slot].spec.key, traceback.format_exc())
                    actions.append(f"{type(one).__name__}: {one}")
        dt = time.perf_counter() - t0
        self.policy_s += dt
        for slot, action in zip(waiting, actions):
            ep = self._slots[slot]
            ep.policy_s += dt
            ep.max_batch = max(ep.max_batch, len(waiting))
            ep.queries += 1
            if isinstance(action, str):
                self._finish(slot, False, action)
            else:
                ep.image, ep.state, ep.extras = None, None, {}
                ep.queue.extend(action[1:self.open_loop_steps] if self.chunked else ())
                self._execute(ep, action[0] if self.chunked else action)
        return len(waiting)

    def _call(self, slots: list[int]) -> np.ndarray:
        eps = [self._slots[s] for s in slots]
        extras = {name: [ep.extras[name] for ep in eps] for name in self.inputs} if self.chunked else None
        return call_policy(self.policy, np.stack([ep.image for ep in eps]), [ep.spec for ep in eps],
                           [ep.state for ep in eps], extras=extras,
                           chunk_steps=self.open_loop_steps if self.chunked else None)
