"""Every domain object survives protobuf: ``x_from_proto(x_to_proto(obj)) == obj``, and through bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.config import JobConfig
from fedgpu.proto.fedgpu.v1 import driver_pb2, node_pb2
from fedgpu.rewards.chain import Receipt
from fedgpu.wire import serde
from fedgpu.wire.records import (
    EncryptionContext,
    JobEvent,
    JobEventKind,
    JobSpec,
    JobStatus,
    LedgerReceipt,
    PrivacyPlan,
    RoundRecord,
    RoundResult,
    Task,
    TrainingPlan,
    UploadProgress,
)

TRAINING = TrainingPlan(epochs=2, batch_size=32, lr=0.05, momentum=0.9, seed=2**62 + 7)
PRIVACY = PrivacyPlan(True, 3.0, 1e-5, 1.2, 10, "rdp", "client", 1.1, 0.5, 4)
ENCRYPTION = EncryptionContext("ckks", b"\x01\x02params", b"public key", "ab" * 32, 4096)
SPEC = JobSpec("j", "mlp", "digits", 3, 8, 4, 60.0, TRAINING, 2, 11, PRIVACY, ENCRYPTION, 12345, 100.0, 30.0, 2.5, 7.0)
RECORD = RoundRecord(
    participants=("a", "b", "c", "d"),
    cohorts=(("a", "b"), ("c", "d")),
    node_status={"a": "complete", "b": "complete", "c": "complete", "d": "complete", "e": "failed: missed the deadline"},
    bytes_up=10,
    bytes_down=20,
    bytes_up_by_node={"a": 5, "b": 5},
    bytes_down_by_node={"a": 10, "b": 10},
    train_seconds={"a": 1.5},
    epsilon={"a": 0.7},
    seconds=3.25,
    attempt=2,
    attempt_id="0123456789abcdef",
)


def test_plans_and_contexts_round_trip() -> None:
    assert serde.training_plan_from_proto(serde.training_plan_to_proto(TRAINING)) == TRAINING
    assert serde.privacy_plan_from_proto(serde.privacy_plan_to_proto(PRIVACY)) == PRIVACY
    assert serde.encryption_from_proto(serde.encryption_to_proto(ENCRYPTION)) == ENCRYPTION


def test_job_spec_round_trips_through_proto_and_bytes() -> None:
    assert serde.job_spec_from_proto(serde.job_spec_to_proto(SPEC)) == SPEC
    assert serde.job_spec_from_bytes(serde.job_spec_to_bytes(SPEC)) == SPEC
    assert serde.job_spec_from_proto(driver_pb2.JobSpec()) == JobSpec()  # every field defaults like proto3


def test_job_config_through_the_wire_is_the_same_job() -> None:
    cfg = JobConfig(model="mlp", dataset="digits", rounds=3, nodes_per_round=4, min_nodes=2, cohort_size=2, seed=5)
    for job in (cfg, JobConfig(model="mlp", dataset="digits", max_weight=2.5, update_norm_bound=float("inf"))):
        spec = serde.job_to_proto(job, serde.encryption_to_proto(ENCRYPTION), 100)
        assert serde.job_from_proto(spec, check_registry=False) == job
        assert serde.job_config(serde.job_spec_from_proto(spec), check_registry=False) == job
        assert serde.job_spec_from_proto(spec).claim_bounds == job.claim_bounds  # what the aggregator puts in tasks


def test_a_spec_without_claim_bounds_gets_the_defaults() -> None:
    """A spec of a driver that predates the fields (0 on the wire) reads as the default bounds."""
    spec = serde.job_to_proto(JobConfig(model="mlp", dataset="digits"), serde.encryption_to_proto(ENCRYPTION), 100)
    spec.ClearField("max_weight")
    spec.ClearField("update_norm_bound")
    assert serde.job_from_proto(spec, check_registry=False) == JobConfig(model="mlp", dataset="digits")
    assert serde.job_spec_from_proto(spec).claim_bounds.update_norm_bound == 100.0


def test_task_round_trips_and_its_wire_size_is_its_serialized_length() -> None:
    task = Task("t1", "job-1", 3, 2, "mlp", "digits", TRAINING, PRIVACY, ENCRYPTION, 1_700_000_000_000, 12345, 4, 2.5, float("inf"))
    assert serde.task_from_proto(serde.task_to_proto(task)) == task
    assert serde.task_wire_size(task) == len(serde.task_to_proto(task).SerializeToString())
    m = node_pb2.Task()
    m.ParseFromString(serde.task_to_proto(task).SerializeToString())
    assert serde.task_from_proto(m) == task


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(list(JobEventKind)),
    rnd=st.integers(0, 2**32 - 1),
    msg=st.text(max_size=50),
    status=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    eps=st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=4),
    up=st.dictionaries(st.text(max_size=8), st.integers(0, 2**64 - 1), max_size=4),
)
def test_job_events_round_trip(kind: JobEventKind, rnd: int, msg: str, status: dict, eps: dict, up: dict) -> None:  # type: ignore[type-arg]
    ev = JobEvent(kind, rnd, ("a", "b"), (("a",), ("b",)), msg, 1, 2, 0.5, status, eps, eps, up, up)
    assert serde.job_event_from_proto(serde.job_event_to_proto(ev)) == ev


def test_a_sums_ready_event_carries_its_record() -> None:
    ev = serde.job_event_from_proto(serde.job_event_to_proto(JobEvent.sums_ready(4, RECORD)))
    assert ev.kind is JobEventKind.SUMS_READY and ev.round == 4
    assert (ev.participants, ev.cohorts, dict(ev.node_status), dict(ev.epsilon)) == (RECORD.participants, RECORD.cohorts, RECORD.node_status, RECORD.epsilon)
    assert (ev.bytes_up, ev.bytes_down, ev.seconds) == (RECORD.bytes_up, RECORD.bytes_down, RECORD.seconds)


def test_an_unknown_event_kind_reads_as_unspecified() -> None:
    assert serde.job_event_kind_from_proto(99) is JobEventKind.UNSPECIFIED
    for kind in JobEventKind:
        assert serde.job_event_kind_to_proto(kind) == kind.value


def test_round_record_round_trips_through_json_and_reads_old_records() -> None:
    assert RoundRecord.from_json(RECORD.to_json()) == RECORD
    old = {"participants": ["a"], "cohorts": [["a"]], "node_status": {"a": "complete"}, "bytes_up": 1, "bytes_down": 2, "seconds": 0.1}
    assert RoundRecord.from_dict(old).epsilon == {} and RoundRecord.from_dict(old).cohorts == (("a",),)


def test_status_result_receipt_and_upload_progress_round_trip() -> None:
    status = JobStatus("job-1", "running", 3, 2, "ok", "cd" * 32)
    assert serde.job_status_from_proto(serde.job_status_to_proto(status)) == status
    result = RoundResult(0.9, 0.3, {"0": 1.0}, b'{"u": 1}', {"a": 0.5}, {"a": 10.0})
    assert serde.round_result_from_proto(serde.round_result_to_proto(result)) == result
    assert serde.round_result_from_proto(driver_pb2.RoundResult()) == RoundResult()
    receipt = LedgerReceipt(42, Receipt("job-1", 3, "a", 10.0, "e" * 64, "h" * 64, "s" * 128, "k" * 64))
    assert serde.receipt_from_proto(serde.receipt_to_proto(receipt)) == receipt
    for progress in (UploadProgress(0, False), UploadProgress(7, True)):
        assert serde.upload_progress_from_proto(serde.upload_progress_to_proto(progress)) == progress
