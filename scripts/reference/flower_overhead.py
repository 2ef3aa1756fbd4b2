"""Reference measurement of Flower (flwr 1.42) simulation overhead.

Runs a fixed FedAvg workload with flwr.simulation.run_simulation (Ray backend,
Message API: ServerApp/ClientApp + flwr.serverapp.strategy.FedAvg) so fedtune's
Rust implementation can be compared side by side:
  - one float32 tensor of P values, x_i = sin(i) (computed in float64);
  - all N clients train every round, no evaluation;
  - each client returns the received model + 0.001 with num-examples 10.
Set up the interpreter with scripts/reference/setup-venv.sh.
The last line printed is always: flower_s=<wall seconds> final_mean=<mean>
"""

import argparse
import os
import sys
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network in the sandbox

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--client-cpus", type=float, default=1.0,
                    help="Ray num_cpus per ClientApp (flwr's default is 2)")
    args = ap.parse_args()
    n, rounds, p = args.clients, args.rounds, args.params

    initial = np.sin(np.arange(p, dtype=np.float64)).astype(np.float32)
    expected = float(np.mean(np.sin(np.arange(p, dtype=np.float64)))) + 0.001 * rounds
    final: dict = {}

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        (x,) = msg.content["arrays"].to_numpy_ndarrays()
        content = RecordDict({
            "arrays": ArrayRecord([x + np.float32(0.001)]),
            "metrics": MetricRecord({"num-examples": 10}),
        })
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                          min_train_nodes=n, min_available_nodes=n)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord([initial]),
                                num_rounds=rounds)
        final["x"] = result.arrays.to_numpy_ndarrays()[0]

    backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}}
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config=backend_config)
    wall = time.perf_counter() - t0

    if "x" not in final:
        sys.exit("simulation finished without a final model")
    x = final["x"]
    assert x.dtype == np.float32 and x.shape == (p,), (x.dtype, x.shape)
    final_mean = float(np.mean(x, dtype=np.float64))
    sys.stderr.flush()
    print(f"clients={n} rounds={rounds} params={p} expected_mean={expected:.9f} "
          f"abs_err={abs(final_mean - expected):.3e}", flush=True)
    print(f"flower_s={wall:.3f} final_mean={final_mean:.9f}", flush=True)
    wait_for_ray_exit()


def wait_for_ray_exit(timeout_s: float = 10.0) -> None:
    """Ray's worker processes take about a second to exit after the simulation returns,
    busy on the cores; wait for them so that whatever runs next (fedtune, side by side) is
    not measured against Flower's teardown. Linux only (reads /proc)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = False
        for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    busy |= f.read().startswith(("ray::", "raylet", "gcs_server"))
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
