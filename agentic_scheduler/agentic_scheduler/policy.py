"""Placement policy: GPU-memory-aware best fit, as pure functions over plain
data so it can be tested without a cluster.

For each queued task (already in queue order) the policy picks the active
worker where the task fits and leaves the *least* room behind:

* GPU tasks: among workers with enough free GPUs, choose the GPUs with the
  most free GPU memory on the worker whose chosen GPUs leave the smallest total
  free GPU memory elsewhere (keeps big, empty GPUs for big jobs);
* other tasks: the worker with the least free memory that still fits (by the
  master's reservations and by live telemetry), then the least free CPU.

Decisions made in one pass reserve resources locally, so two tasks are never
put on the same GPU or squeezed onto the same full worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Gpu:
    uuid: str
    memory_total: int
    memory_used: int

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)


@dataclass
class WorkerFit:
    worker_id: str
    free_nano_cpus: int
    free_memory: int
    free_gpus: list[Gpu] = field(default_factory=list)


@dataclass
class TaskNeed:
    task_id: str
    nano_cpus: int = 0
    memory: int = 0
    gpu_count: int = 0  # -1: all GPUs of a worker
    gpu_ids: list[str] = field(default_factory=list)


@dataclass
class Decision:
    task_id: str
    worker_id: str
    gpu_uuids: list[str]
    reason: str


def _fits_cpu_memory(worker: WorkerFit, task: TaskNeed) -> bool:
    return worker.free_nano_cpus >= task.nano_cpus and worker.free_memory >= task.memory


def _choose_gpus(worker: WorkerFit, task: TaskNeed) -> list[Gpu] | None:
    if task.gpu_ids:
        by_id = {g.uuid: g for g in worker.free_gpus}
        chosen = [by_id.get(uuid) for uuid in task.gpu_ids]
        return None if any(g is None for g in chosen) else chosen  # type: ignore[return-value]
    if task.gpu_count < 0:
        return list(worker.free_gpus) if worker.free_gpus else None
    if task.gpu_count == 0:
        return []
    if len(worker.free_gpus) < task.gpu_count:
        return None
    # Most free memory first: the task gets the emptiest GPUs of this worker.
    return sorted(worker.free_gpus, key=lambda g: (-g.memory_free, g.uuid))[: task.gpu_count]


def plan(tasks: list[TaskNeed], workers: list[WorkerFit]) -> tuple[list[Decision], dict[str, str]]:
    """Decides placements for `tasks` in order. Returns the decisions and, for
    tasks left waiting, why."""
    decisions: list[Decision] = []
    waiting: dict[str, str] = {}
    for task in tasks:
        best = None
        for worker in workers:
            if not _fits_cpu_memory(worker, task):
                continue
            gpus = _choose_gpus(worker, task)
            if gpus is None:
                continue
            left_gpu_memory = sum(g.memory_free for g in worker.free_gpus) - sum(g.memory_free for g in gpus)
            key = (
                left_gpu_memory if gpus else 0,
                worker.free_memory - task.memory,
                worker.free_nano_cpus - task.nano_cpus,
                worker.worker_id,
            )
            if best is None or key < best[0]:
                best = (key, worker, gpus)
        if best is None:
            waiting[task.task_id] = "no worker fits it now"
            continue
        _, worker, gpus = best
        worker.free_nano_cpus -= task.nano_cpus
        worker.free_memory -= task.memory
        taken = {g.uuid for g in gpus}
        worker.free_gpus = [g for g in worker.free_gpus if g.uuid not in taken]
        reason = (
            f"best fit: {len(gpus)} GPU(s) with {sum(g.memory_free for g in gpus) >> 20} MiB free"
            if gpus
            else f"best fit: {worker.free_memory >> 20} MiB left on {worker.worker_id}"
        )
        decisions.append(Decision(task.task_id, worker.worker_id, [g.uuid for g in gpus], reason))
    return decisions, waiting
