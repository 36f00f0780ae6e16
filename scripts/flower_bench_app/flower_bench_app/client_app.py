"""The ClientApp: fedgpu's own local loop (fedgpu.node.training.train_local) on this SuperNode's partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedgpu.datasets import ArrayDataset
from fedgpu.models import ModelSpec, build_model
from fedgpu.node.training import LocalTrainConfig, train_local

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)  # as fedgpu's nodes in the benchmark (--threads 1)
    cfg = context.run_config
    part = int(context.node_config["partition-id"])
    with np.load(Path(str(cfg["data-dir"])) / f"node{part}.npz", allow_pickle=False) as f:
        data = ArrayDataset(f["x"], f["y"])
    model = build_model(str(cfg["model"]), ModelSpec((40,), 10))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rnd = int(msg.content["config"]["server-round"])
    local = LocalTrainConfig(epochs=int(cfg["local-epochs"]), batch_size=int(cfg["batch-size"]), lr=float(cfg["lr"]), momentum=float(cfg["momentum"]), seed=int(cfg["seed"]) + rnd)
    result = train_local(model, data, local, torch.device("cpu"))
    arrays = ArrayRecord(model.state_dict())
    payload = sum(len(a.data) for a in arrays.values())
    metrics = MetricRecord({"num-examples": result.num_samples, "train-s": result.seconds, "bytes-up": payload})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)
