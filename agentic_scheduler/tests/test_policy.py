"""Unit tests of the best-fit policy (no cluster needed)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentic_scheduler.policy import Gpu, TaskNeed, WorkerFit, plan  # noqa: E402

GIB = 1 << 30
CPU = 1_000_000_000


def test_cpu_tasks_go_where_they_fit_most_tightly():
    workers = [WorkerFit("big", 8 * CPU, 64 * GIB), WorkerFit("small", 2 * CPU, 4 * GIB)]
    decisions, waiting = plan([TaskNeed("t1", CPU, 2 * GIB)], workers)
    assert [d.worker_id for d in decisions] == ["small"]
    assert not waiting


def test_gpu_tasks_take_emptiest_gpus_and_never_share():
    w = WorkerFit("g", 8 * CPU, 64 * GIB, [Gpu("A", 80 * GIB, 70 * GIB), Gpu("B", 80 * GIB, 0)])
    decisions, waiting = plan([TaskNeed("t1", gpu_count=1), TaskNeed("t2", gpu_count=1), TaskNeed("t3", gpu_count=1)], [w])
    assert [d.gpu_uuids for d in decisions] == [["B"], ["A"]]
    assert list(waiting) == ["t3"]


def test_best_fit_prefers_the_worker_with_less_free_gpu_memory():
    roomy = WorkerFit("roomy", 8 * CPU, 64 * GIB, [Gpu("R0", 80 * GIB, 0), Gpu("R1", 80 * GIB, 0)])
    tight = WorkerFit("tight", 8 * CPU, 64 * GIB, [Gpu("T0", 24 * GIB, 0)])
    decisions, _ = plan([TaskNeed("t1", gpu_count=1)], [roomy, tight])
    assert decisions[0].worker_id == "tight"


def test_exact_gpu_ids_and_resources_reserved_within_a_pass():
    w = WorkerFit("w", 2 * CPU, 8 * GIB, [Gpu("X", GIB, 0), Gpu("Y", GIB, 0)])
    decisions, waiting = plan([TaskNeed("t1", 2 * CPU, gpu_ids=["Y"]), TaskNeed("t2", CPU)], [w])
    assert decisions[0].gpu_uuids == ["Y"]
    assert list(waiting) == ["t2"], "the CPUs went to t1"


def test_nothing_fits():
    decisions, waiting = plan([TaskNeed("t1", 64 * CPU)], [WorkerFit("w", 2 * CPU, GIB)])
    assert not decisions and waiting == {"t1": "no worker fits it now"}
