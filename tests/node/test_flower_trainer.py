"""The Flower adapter: what it hands a NumPyClient, what it takes back, and what it declines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedgpu.datasets import ArrayDataset
from fedgpu.errors import ConfigError, FedgpuError, UnsupportedTask
from fedgpu.models import ModelSpec, build_model
from fedgpu.models.flat import flatten
from fedgpu.node.flower import FlowerTrainer, load_attr, resolve_client
from fedgpu.node.training import LocalTrainConfig
from fedgpu.wire.records import EncryptionContext, PrivacyPlan, Task, TrainingPlan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_client.py"


class Halver:
    """A NumPyClient in all but name: halves every weight, claims ``count`` examples."""

    def __init__(self, count: int = 7) -> None:
        self.count = count
        self.config: dict = {}

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        self.config = config
        return [p / 2 for p in parameters], self.count, {}


def task(mode: str = "", enabled: bool = False) -> Task:
    return Task("t", "j", 3, 2, "cnn1d", "mnist1d", TrainingPlan(2, 16, 0.1, 0.9, 5), PrivacyPlan(enabled=enabled, mode=mode), EncryptionContext(), 0, 0, 0)


def test_fit_gets_state_order_and_config_and_its_weights_land_in_the_model() -> None:
    model = build_model("cnn1d", ModelSpec((40,), 10), seed=0)
    before = flatten(model.state_dict())
    client = Halver(count=10**6)
    data = ArrayDataset(np.zeros((50, 40), np.float32), np.zeros(50, np.int64))
    examples = FlowerTrainer(client).train(model, data, LocalTrainConfig(epochs=2, batch_size=16, lr=0.1, seed=5), 3, torch.device("cpu"))
    assert examples == 50  # capped at the rows mapped with --data
    np.testing.assert_allclose(flatten(model.state_dict()), before / 2, rtol=1e-6)
    assert client.config["server_round"] == 3 and client.config["local_epochs"] == 2 and client.config["batch_size"] == 16
    assert client.config["lr"] == pytest.approx(0.1)


def test_wrong_architecture_is_refused() -> None:
    class Wrong(Halver):
        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            return parameters[:-1], 1, {}

    model = build_model("cnn1d", ModelSpec((40,), 10), seed=0)
    data = ArrayDataset(np.zeros((5, 40), np.float32), np.zeros(5, np.int64))
    with pytest.raises(FedgpuError, match="returned 7 arrays"):
        FlowerTrainer(Wrong()).train(model, data, LocalTrainConfig(), 1, torch.device("cpu"))


def test_sample_dp_is_declined_client_dp_is_not() -> None:
    trainer = FlowerTrainer(Halver())
    with pytest.raises(UnsupportedTask, match="sample-level DP"):
        trainer.check(task("sample", enabled=True))
    trainer.check(task("client", enabled=True))
    trainer.check(task())


def test_loading_module_attr() -> None:
    cls = load_attr(f"{EXAMPLE}:FlowerClient")
    assert cls.__name__ == "FlowerClient"
    assert isinstance(resolve_client(Halver), Halver)  # a class is built with no arguments
    assert isinstance(resolve_client(lambda: Halver()), Halver)  # a factory is called
    with pytest.raises(ConfigError, match="MODULE:ATTR"):
        load_attr("no_colon")
    with pytest.raises(ConfigError, match="no attribute"):
        load_attr(f"{EXAMPLE}:missing")
    with pytest.raises(ConfigError, match="no fit"):
        resolve_client(object())
