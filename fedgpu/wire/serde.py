"""Domain objects <-> protobuf, in one place (``x_to_proto`` / ``x_from_proto`` pairs)."""

from __future__ import annotations

from fedgpu.config import JobConfig, PrivacyConfig, TrainingConfig, job_from_dict
from fedgpu.proto.fedgpu.v1 import common_pb2, driver_pb2


def training_to_proto(t: TrainingConfig, seed: int) -> common_pb2.TrainingPlan:
    return common_pb2.TrainingPlan(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, seed=seed)


def privacy_to_proto(p: PrivacyConfig, rounds: int, cohort_size: int) -> common_pb2.PrivacyPlan:
    return common_pb2.PrivacyPlan(
        enabled=p.enabled,
        epsilon=p.epsilon,
        delta=p.delta,
        max_grad_norm=p.max_grad_norm,
        rounds=rounds,
        accountant=p.accountant,
        mode=p.mode,
        client_noise_multiplier=p.client_noise_multiplier,
        client_clip=p.client_clip,
        cohort_size=cohort_size,
    )


def job_to_proto(job: JobConfig, encryption: common_pb2.EncryptionContext, num_params: int) -> driver_pb2.JobSpec:
    return driver_pb2.JobSpec(
        name=job.name,
        model=job.model,
        dataset=job.dataset,
        rounds=job.rounds,
        nodes_per_round=job.nodes_per_round,
        min_nodes=job.min_nodes,
        deadline_seconds=job.deadline_seconds,
        training=training_to_proto(job.training, job.seed),
        cohort_size=job.cohort_size,
        seed=job.seed,
        privacy=privacy_to_proto(job.privacy, job.rounds, job.cohort_size),
        encryption=encryption,
        num_params=num_params,
        reward_pool=job.rewards.pool_per_round,
        driver_lease_seconds=job.driver_lease_seconds,
    )


def job_from_proto(spec: driver_pb2.JobSpec, check_registry: bool = True) -> JobConfig:
    """Validate a submitted spec with the same rules as a job file (ConfigError names the field)."""
    t, p = spec.training, spec.privacy
    data = {
        "name": spec.name or "job",
        "model": spec.model,
        "dataset": spec.dataset,
        "rounds": spec.rounds,
        "nodes_per_round": spec.nodes_per_round,
        "min_nodes": spec.min_nodes,
        "deadline_seconds": spec.deadline_seconds,
        "cohort_size": spec.cohort_size,
        "seed": spec.seed,
        "driver_lease_seconds": spec.driver_lease_seconds or JobConfig.driver_lease_seconds,
        "training": {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "momentum": t.momentum},
        "encryption": {"scheme": spec.encryption.scheme},
        "rewards": {"pool_per_round": spec.reward_pool},
    }
    if p.enabled:
        data["privacy"] = {
            "enabled": True,
            "epsilon": p.epsilon,
            "delta": p.delta,
            "max_grad_norm": p.max_grad_norm,
            "accountant": p.accountant,
            "mode": p.mode,
            "client_clip": p.client_clip,
            "client_noise_multiplier": p.client_noise_multiplier,
        }
    return job_from_dict(data, check_registry)


__all__ = ["job_from_proto", "job_to_proto", "privacy_to_proto", "training_to_proto"]
