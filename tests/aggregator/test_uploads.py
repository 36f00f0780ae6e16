"""Tasks an over-selected round closed without: their node is told "not needed", nobody else learns anything."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedgpu import crypto
from fedgpu.aggregator.attempt import RoundState, TaskState, TaskStatus
from fedgpu.aggregator.registry import NodeRegistry
from fedgpu.aggregator.store import Store
from fedgpu.aggregator.uploads import NOT_NEEDED_KEPT, Uploads
from fedgpu.crypto.plain import PlainKeyPair
from fedgpu.errors import NotFoundError
from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan


def _task(task_id: str) -> Task:
    return Task(
        task_id, "job-1", 1, 0, "mlp", "digits", TrainingPlan(1, 16, 0.05, 0.0, 1), PrivacyPlan(False, 0.0, 0.0, 0.0, 0, "rdp", "sample", 0.0, 0.0, 0),
        EncryptionContext("none", b"", b"", "", 1000), int(time.time() * 1000) + 60_000, 10, 1, 0.0, 0.0,
    )


def _round(tmp_path: Path, close_in: float) -> RoundState:
    now = time.time()
    return RoundState("job-1", 1, 1, "a1", "none", now, now + close_in, crypto.adder("none", PlainKeyPair(values_per_chunk=1000).params), [["na", "nb"]], {}, 1, tmp_path / "acc")


def test_a_task_cut_by_an_early_close_is_answered_not_needed_and_only_to_its_node(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.db"))
    try:
        uploads = Uploads(store, NodeRegistry(store, booted_ms=0), tmp_path / "spool")
        early, late = _round(tmp_path, 60.0), _round(tmp_path, -1.0)
        for rs, node, tid in ((early, "na", "t-early"), (late, "nb", "t-late")):
            uploads.offer(rs, TaskState(task=_task(tid), node_id=node, cohort=0))
        uploads.retire(early, at_deadline=True)  # closed before its deadline: the round had enough updates
        uploads.retire(late, at_deadline=True)   # closed at its deadline: a miss
        assert early.tasks["t-early"].status is TaskStatus.FAILED and not early.tasks["t-early"].missed_deadline
        assert uploads.upload_status("na", "t-early").not_needed
        assert late.tasks["t-late"].missed_deadline
        with pytest.raises(NotFoundError):
            uploads.upload_status("nb", "t-late")  # a missed deadline is no "not needed"
        with pytest.raises(NotFoundError):
            uploads.upload_status("nb", "t-early")  # another node's task: nothing said about it
        for i in range(NOT_NEEDED_KEPT):  # bounded: the oldest are forgotten
            uploads.not_needed[f"x{i}"] = "nc"
        rs = _round(tmp_path, 60.0)
        uploads.offer(rs, TaskState(task=_task("t-new"), node_id="nc", cohort=0))
        uploads.retire(rs, at_deadline=True)
        assert len(uploads.not_needed) == NOT_NEEDED_KEPT and "t-early" not in uploads.not_needed and uploads.upload_status("nc", "t-new").not_needed
    finally:
        store.engine.dispose()
