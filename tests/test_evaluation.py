"""The driver's score of a model: accuracy and mean cross-entropy over every sample, in batches."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.evaluation import evaluate


def test_accuracy_and_loss_cover_every_sample_across_batches() -> None:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))  # always says class 0
    y = np.array([0, 0, 1, 2, 0, 1, 0], dtype=np.int64)
    data = ArrayDataset(np.zeros((len(y), 4), dtype=np.float32), y)
    acc, loss = evaluate(model, data, batch_size=3, device=torch.device("cpu"))
    p0 = math.exp(2.0) / (math.exp(2.0) + 2.0)
    assert acc == 4 / 7
    assert math.isclose(loss, -(4 * math.log(p0) + 3 * math.log((1 - p0) / 2)) / 7, rel_tol=1e-6)
    assert next(model.parameters()).device.type == "cpu"
