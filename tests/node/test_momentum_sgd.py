"""train_local's own SGD step: the same weights as torch.optim.SGD, bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from torch import nn

from fedgpu.datasets import ArrayDataset
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.training import LocalTrainConfig, make_loader, train_local


def test_train_local_matches_torch_sgd_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(200, 40)).astype(np.float32), rng.integers(0, 10, 200).astype(np.int64))
    cfg = LocalTrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, seed=3)
    ours = build_model("cnn1d", ModelSpec((40,), 10), seed=1)
    train_local(ours, data, cfg, torch.device("cpu"))

    ref = build_model("cnn1d", ModelSpec((40,), 10), seed=1)
    torch.manual_seed(cfg.seed)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loader = make_loader(data, cfg.batch_size, cfg.seed, torch.device("cpu"))
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            nn.CrossEntropyLoss()(ref(xb), yb).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True))


def test_train_local_does_not_import_dynamo() -> None:
    code = (
        "import sys, numpy as np, torch\n"
        "from fedgpu.datasets import ArrayDataset\n"
        "from fedgpu.models import ModelSpec, build_model\n"
        "from fedgpu.node.training import LocalTrainConfig, train_local\n"
        "data = ArrayDataset(np.zeros((64, 40), np.float32), np.zeros(64, np.int64))\n"
        "train_local(build_model('cnn1d', ModelSpec((40,), 10)), data, LocalTrainConfig(), torch.device('cpu'))\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
