"""The job's rule travels in the job spec (JobSpec.aggregation = 16) and comes back the same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu.config import AggregationConfig, JobConfig
from fedgpu.proto.fedgpu.v1 import driver_pb2
from fedgpu.wire import serde
from fedgpu.wire.records import AggregationPlan, EncryptionContext, JobSpec

ENCRYPTION = EncryptionContext("ckks", b"\x01\x02params", b"public key", "ab" * 32, 4096)
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=50, deadline=None)
@given(rule=st.text(max_size=40), trim=finite, bound=finite)
def test_the_plan_round_trips_through_proto_and_inside_the_spec_through_bytes(rule: str, trim: float, bound: float) -> None:
    plan = AggregationPlan(rule, trim, bound)
    assert serde.aggregation_plan_from_proto(serde.aggregation_plan_to_proto(plan)) == plan
    spec = JobSpec(name="j", model="mlp", dataset="digits", rounds=3, aggregation=plan)
    assert serde.job_spec_from_proto(serde.job_spec_to_proto(spec)) == spec
    assert serde.job_spec_from_bytes(serde.job_spec_to_bytes(spec)) == spec


def test_the_plan_is_field_16_of_the_job_spec() -> None:
    field = driver_pb2.JobSpec.DESCRIPTOR.fields_by_name["aggregation"]
    assert field.number == 16 and field.message_type.name == "AggregationPlan"
    assert [f.name for f in driver_pb2.AggregationPlan.DESCRIPTOR.fields] == ["rule", "trim_fraction", "norm_bound"]


def test_a_job_with_a_robust_rule_is_the_same_job_through_the_wire() -> None:
    for agg in (AggregationConfig(), AggregationConfig("median"), AggregationConfig("trimmed_mean", 0.34, 1.0), AggregationConfig("norm_bounded", 0.2, 0.75)):
        cfg = JobConfig(model="mlp", dataset="digits", rounds=3, nodes_per_round=9, min_nodes=9, cohort_size=3, seed=5, aggregation=agg)
        spec = serde.job_to_proto(cfg, serde.encryption_to_proto(ENCRYPTION), 100)
        assert serde.aggregation_plan_from_proto(spec.aggregation) == AggregationPlan(agg.rule, agg.trim_fraction, agg.norm_bound)
        assert serde.job_from_proto(spec, check_registry=False) == cfg
        assert serde.job_config(serde.job_spec_from_proto(spec), check_registry=False) == cfg


def test_a_spec_without_a_plan_is_a_fedavg_job() -> None:
    cfg = JobConfig(model="mlp", dataset="digits", rounds=3)
    spec = serde.job_to_proto(cfg, serde.encryption_to_proto(ENCRYPTION), 100)
    spec.ClearField("aggregation")  # what a driver from before the field sends
    assert serde.job_spec_from_proto(spec).aggregation == AggregationPlan()
    assert serde.job_from_proto(spec, check_registry=False).aggregation == AggregationConfig()
