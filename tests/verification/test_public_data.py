"""Public-data jobs: the job table, the shards every node builds alike, and deterministic training on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgpu.adversaries import apply_behaviour
from fedgpu.config import job_from_dict
from fedgpu.datasets import get_schema, public_shard
from fedgpu.errors import ConfigError
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.agent import NodeConfig
from fedgpu.node.training import LocalTrainConfig, deterministic, train_local
from fedgpu.wire import tensors
from fedgpu.wire.records import EncryptionContext, PrivacyPlan, PublicDataShard, Task, TrainingPlan
from fedgpu.wire.serde import job_config, job_spec_from_proto, job_spec_of, job_spec_to_proto, task_from_proto, task_to_proto

BASE = {"model": "digits_cnn", "dataset": "digits", "nodes_per_round": 4, "min_nodes": 2}


def test_a_public_data_table_turns_it_on_and_round_trips_the_wire() -> None:
    job = job_from_dict({**BASE, "public_data": {"replication": 0.25}})
    assert job.public_data.enabled and job.public_data.replication == 0.25
    spec = job_spec_from_proto(job_spec_to_proto(job_spec_of(job, EncryptionContext(scheme="none"), 10)))
    assert spec.public_data is not None and spec.public_data.shards == 4  # 0: nodes_per_round
    assert spec.dataset_capability == "public:digits"
    assert job_config(spec).public_data.replication == 0.25
    private = job_spec_of(job_from_dict({**BASE, "cohort_size": 1}), EncryptionContext(scheme="none"), 10)
    assert private.public_data is None and private.dataset_capability == "digits"


@pytest.mark.parametrize(
    "table, extra, field",
    [
        ({"replication": 1.5}, {}, "public_data.replication"),
        ({"tolerance": 0.0}, {}, "public_data.tolerance"),
        ({"shards": -1}, {}, "public_data.shards"),
        ({"replicas": 2}, {}, "public_data.replicas"),
        ({}, {"privacy": {"epsilon": 4.0}}, "public_data"),
        ({}, {"cohort_size": 2}, "cohort_size"),
    ],
)
def test_bad_public_data_names_the_field(table: dict, extra: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=f"^{field}"):
        job_from_dict({**BASE, **extra, "public_data": table})


def test_task_carries_its_shard() -> None:
    t = Task("t", "j", 1, 0, "m", "digits", TrainingPlan(seed=3), PrivacyPlan(), EncryptionContext(scheme="none"), 0, 10, 1, public_data=PublicDataShard(0, 7, 2, 5))
    assert task_from_proto(task_to_proto(t)) == t


def test_shards_are_alike_everywhere_and_cover_the_training_set() -> None:
    parts = [public_shard("digits", 0, 3, i, 4) for i in range(4)]
    assert sum(len(p) for p in parts) == 1437
    again = public_shard("digits", 0, 3, 1, 4)
    assert np.array_equal(again.x, parts[1].x) and np.array_equal(again.y, parts[1].y)
    assert not np.array_equal(public_shard("digits", 0, 4, 1, 4).y, parts[1].y)  # another data seed, another shard
    with pytest.raises(ConfigError, match="shard 4 of 4"):
        public_shard("digits", 0, 3, 4, 4)


def _train(threads: int, cfg: NodeConfig | None = None) -> np.ndarray:
    schema = get_schema("digits")
    model = build_model("digits_cnn", ModelSpec(schema.input_shape, schema.num_classes), seed=0)
    start = tensors.flatten(model.state_dict())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # what the node process was started with: deterministic() fixes it
    try:
        with deterministic():
            train_local(model, public_shard("digits", 0, 0, 1, 6), LocalTrainConfig(epochs=2, batch_size=16, lr=0.05, seed=11), torch.device("cpu"),
                        skip_step=cfg.trainer.skip_step if cfg else None)  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(before)
    return tensors.flatten(model.state_dict()) - start


def test_two_runs_of_one_task_are_bit_identical_on_cpu() -> None:
    a, b = _train(1), _train(2)
    assert np.array_equal(a, b) and np.abs(a).max() > 0
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the task


def test_a_lazy_node_skips_about_half_its_steps() -> None:
    cfg = NodeConfig(aggregator="", data={}, identity_path=None)  # type: ignore[arg-type]
    apply_behaviour(cfg, "lazy")
    skip = cfg.trainer.skip_step  # type: ignore[attr-defined]
    assert skip is not None
    skipped = sum(skip(i) for i in range(2000))
    assert 850 < skipped < 1150
    honest, lazy = _train(1), _train(1, cfg)
    assert np.linalg.norm(honest - lazy) / np.linalg.norm(honest) > 0.05


def test_the_drivers_reexecution_is_the_nodes_update(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedgpu.driver.verification import reexecute
    from fedgpu.node.agent import NodeAgent

    job = job_from_dict({**BASE, "training": {"epochs": 1, "batch_size": 16}, "public_data": {"shards": 6}})
    schema = get_schema("digits")
    state = build_model("digits_cnn", ModelSpec(schema.input_shape, schema.num_classes), seed=3).state_dict()
    start = tensors.flatten(state)
    spec = job_spec_of(job, EncryptionContext(scheme="none"), start.size)
    task = Task(
        "t", "j", 1, 0, job.model, job.dataset, TrainingPlan(1, 16, job.training.lr, job.training.momentum, 99), PrivacyPlan(),
        EncryptionContext(scheme="none"), 0, start.size, 1, spec.claim_bounds.max_weight, spec.claim_bounds.update_norm_bound, public_data=PublicDataShard(0, 0, 4, 6),
    )
    agent = NodeAgent(NodeConfig(aggregator="127.0.0.1:9", data={}, identity_path=tmp_path / "id.pem"))
    try:
        agent._models[("j", 0)] = state  # as if downloaded
        delta, weight, _, _ = agent._train(task)
    finally:
        agent.channel.close()
    assert np.array_equal(reexecute(job, start, 4, 99), delta * weight)


def test_replica_sets_and_disputes_round_trip_the_wire_and_the_store() -> None:
    from fedgpu.wire.records import JobEvent, JobEventKind, ReplicaDispute, ReplicaSet, RoundRecord, RoundResult
    from fedgpu.wire.serde import job_event_from_proto, job_event_to_proto, round_result_from_proto, round_result_to_proto

    sets = (ReplicaSet(("a", "b"), 3, 2**62, 0), ReplicaSet(("c",), 1, 5, settles=4))
    ev = JobEvent(JobEventKind.SUMS_READY, 5, ("a", "b", "c"), replicas=sets)
    assert job_event_from_proto(job_event_to_proto(ev)) == ev
    rec = RoundRecord(("a", "b", "c"), (("a",), ("b",), ("c",)), {}, 0, 0, {}, {}, {}, {}, 1.0, replicas=sets)
    assert RoundRecord.from_json(rec.to_json()) == rec
    assert RoundRecord.from_dict({k: v for k, v in rec.to_dict().items() if k != "replicas"}).replicas == ()  # older records
    res = RoundResult(accuracy=0.5, disputes=(ReplicaDispute(5, 3, 9, 4, ("a", "b"), ("c",)),), flagged=("d",))
    assert round_result_from_proto(round_result_to_proto(res)) == res


def test_overlapping_deterministic_sections_in_two_threads_restore_torchs_settings() -> None:
    """Node threads of one process (benchmarks, the in-process aggregator tests) share torch's settings:
    the last section out restores them, whichever order the threads leave in."""
    import threading

    from fedgpu.node.training import deterministic

    threads_before = torch.get_num_threads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[bool] = []

    def first() -> None:
        with deterministic():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with deterministic():
            second_in.set()
            first_out.wait(10)
            inside.append(torch.are_deterministic_algorithms_enabled())  # the first one left; this one is still in

    ts = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert inside == [True]
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads_before
