"""The ServerApp: Flower's FedAvg for num-server-rounds, the global model evaluated centrally after each round
on the test set fedgpu's driver uses; each round's end time and accuracy go to DATA_DIR/flower_rounds.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedgpu.datasets import ArrayDataset
from fedgpu.evaluation import evaluate
from fedgpu.models import ModelSpec, build_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    data_dir = Path(str(cfg["data-dir"]))
    nodes = int(cfg["num-nodes"])
    model = build_model(str(cfg["model"]), ModelSpec((40,), 10), seed=int(cfg["seed"]))
    with np.load(data_dir / "test.npz", allow_pickle=False) as f:
        test = ArrayDataset(f["x"], f["y"])
    log = data_dir / "flower_rounds.jsonl"

    def central(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        accuracy, loss = evaluate(model, test)
        with log.open("a") as out:
            out.write(json.dumps({"round": rnd, "t": time.time(), "accuracy": accuracy, "loss": loss}) + "\n")
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({}), evaluate_fn=central)
    metrics = {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
    (data_dir / "flower_result.json").write_text(json.dumps({"train_metrics": metrics}))
