#!/usr/bin/env python3
"""Golden rounds from Flower's strategies (flwr.server.strategy, `aggregate_fit`).

Seven devices (the seventh sends an outlier, so robust rules differ from the mean) update a
three-tensor model for three chained rounds. For each strategy and setting, Flower's
`aggregate_fit` computes each round from the devices' parameters and example counts; the
result, rounded to f32 as a stored model is, is the next round's model (Flower's own
`current_weights` / `initial_parameters` are set to that f32 model too, so both sides chain
the same model). Flower runs on float64 copies of the f32 inputs: the exact answer, which
`fedtune aggregate` must match within 1e-6 relative (tests/strategies_golden.rs).

A device's parameters in round r are the round's model plus its fixed offset, added in f32
(numpy float32 + float32, as the Rust test adds them).

Run:  scripts/reference/setup-venv.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_strategies.py
"""
import importlib.metadata
import json
import os

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import strategy as fs

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "strategies",
                   "flower_rounds.json")

SHAPES = [("a.weight", [4, 3]), ("b.bias", [5]), ("c.lora_a", [2, 2, 2])]
NUM_EXAMPLES = [10, 25, 7, 40, 13, 30, 18]
ROUNDS = 3

# (fedtune name, Flower class, parameters); Multi-Krum is Flower's Krum with clients kept.
CASES = [
    ("fedavg", fs.FedAvg, {}),
    ("fedavgm", fs.FedAvgM, {}),
    ("fedavgm", fs.FedAvgM, {"server_learning_rate": 0.7, "server_momentum": 0.9}),
    ("fedadagrad", fs.FedAdagrad, {}),
    ("fedadagrad", fs.FedAdagrad, {"eta": 0.05, "tau": 1e-3}),
    ("fedadam", fs.FedAdam, {}),
    ("fedadam", fs.FedAdam, {"eta": 0.01, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-4}),
    ("fedyogi", fs.FedYogi, {}),
    ("fedyogi", fs.FedYogi, {"eta": 0.05, "beta_1": 0.5, "tau": 1e-2}),
    ("fedmedian", fs.FedMedian, {}),
    ("fedtrimmedavg", fs.FedTrimmedAvg, {}),
    ("fedtrimmedavg", fs.FedTrimmedAvg, {"beta": 0.3}),
    ("krum", fs.Krum, {"num_malicious_clients": 1}),
    ("krum", fs.Krum, {"num_malicious_clients": 2}),
    ("multikrum", fs.Krum, {"num_malicious_clients": 1, "num_clients_to_keep": 3}),
    ("bulyan", fs.Bulyan, {"num_malicious_clients": 1}),
]
STATEFUL = (fs.FedAdagrad, fs.FedAdam, fs.FedYogi)


def main():
    rng = np.random.default_rng(21)
    initial = [rng.standard_normal(s).astype(np.float32) for _, s in SHAPES]
    offsets = []  # [round][device][tensor]
    for _ in range(ROUNDS):
        per_round = []
        for d in range(len(NUM_EXAMPLES)):
            scale, shift = (1.5, 2.0) if d == 6 else (0.05, 0.0)
            per_round.append([(rng.standard_normal(s) * scale + shift).astype(np.float32)
                              for _, s in SHAPES])
        offsets.append(per_round)

    cases = []
    for name, cls, params in CASES:
        init64 = ndarrays_to_parameters([a.astype(np.float64) for a in initial])
        kwargs = dict(params)
        if cls is fs.Bulyan:
            kwargs["to_keep"] = 0  # Krum's argument, passed through by Bulyan
        strategy = cls(initial_parameters=init64, **kwargs)
        model = initial
        rounds = []
        for r in range(ROUNDS):
            results = []
            for d, n in enumerate(NUM_EXAMPLES):
                device = [(m + o).astype(np.float32) for m, o in zip(model, offsets[r][d])]
                fit = FitRes(status=Status(code=Code.OK, message=""),
                             parameters=ndarrays_to_parameters(
                                 [a.astype(np.float64) for a in device]),
                             num_examples=n, metrics={})
                results.append((None, fit))
            aggregated, _ = strategy.aggregate_fit(r + 1, results, [])
            model = [a.astype(np.float32) for a in parameters_to_ndarrays(aggregated)]
            as64 = [a.astype(np.float64) for a in model]
            if isinstance(strategy, STATEFUL):
                strategy.current_weights = as64
            elif cls is fs.FedAvgM:
                strategy.initial_parameters = ndarrays_to_parameters(as64)
            rounds.append([a.ravel().tolist() for a in model])
        cases.append({"strategy": name, "params": params, "rounds": rounds})

    out = {
        "flwr_version": importlib.metadata.version("flwr"),
        "tensors": [{"name": n, "shape": s} for n, s in SHAPES],
        "num_examples": NUM_EXAMPLES,
        "initial": [a.ravel().tolist() for a in initial],
        "offsets": [[[a.ravel().tolist() for a in dev] for dev in rnd] for rnd in offsets],
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases x {ROUNDS} rounds to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
