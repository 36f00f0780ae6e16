"""A Flower NumPyClient for MNIST-1D, written as Flower's PyTorch quickstart writes one (no fedgpu imports).

Run it as a node of a fedgpu job (the model is the job's `cnn1d`, so the weights fit):

    FLOWER_DATA=mine.npz fedgpu node --flower-client examples/flower_client.py:client_fn \\
        --data mnist1d=mine.npz --aggregator HOST:PORT --tls-ca ca.pem

FLOWER_DATA is the client's own .npz (arrays x: (n, 40) float32, y: (n,) int); --data maps the same
file for fedgpu, which advertises the dataset and caps the example count claimed at its rows.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    """A 1D CNN for 40-step MNIST-1D signals (~28 k parameters)."""

    def __init__(self, width: int = 64, length: int = 40, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, length)).numel()
        self.head = nn.Linear(flat, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def load_data(path: str) -> TensorDataset:
    with np.load(path, allow_pickle=False) as f:
        return TensorDataset(torch.from_numpy(f["x"].astype(np.float32)), torch.from_numpy(f["y"].astype(np.int64)))


def train(net: nn.Module, trainset: TensorDataset, epochs: int, batch_size: int, lr: float, momentum: float) -> float:
    loader = DataLoader(trainset, batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    criterion = nn.CrossEntropyLoss()
    net.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            opt.step()
    return float(loss)


def test(net: nn.Module, testset: TensorDataset) -> tuple[float, float]:
    net.eval()
    with torch.no_grad():
        x, y = testset.tensors
        logits = net(x)
        return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


class FlowerClient(NumPyClient):
    def __init__(self, net: nn.Module, trainset: TensorDataset) -> None:
        self.net = net
        self.trainset = trainset

    def get_parameters(self, config):  # type: ignore[no-untyped-def]
        return [v.cpu().numpy() for v in self.net.state_dict().values()]

    def set_parameters(self, parameters) -> None:  # type: ignore[no-untyped-def]
        keys = self.net.state_dict().keys()
        self.net.load_state_dict(OrderedDict((k, torch.tensor(v)) for k, v in zip(keys, parameters, strict=True)), strict=True)

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        self.set_parameters(parameters)
        loss = train(
            self.net, self.trainset, epochs=int(config.get("local_epochs", 1)), batch_size=int(config.get("batch_size", 32)),
            lr=float(config.get("lr", 0.05)), momentum=float(config.get("momentum", 0.9)),
        )
        return self.get_parameters({}), len(self.trainset), {"train_loss": loss}

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        self.set_parameters(parameters)
        loss, accuracy = test(self.net, self.trainset)
        return loss, len(self.trainset), {"accuracy": accuracy}


def client_fn() -> FlowerClient:
    """The client for this machine's data (the file FLOWER_DATA names)."""
    return FlowerClient(Net(), load_data(os.environ["FLOWER_DATA"]))
