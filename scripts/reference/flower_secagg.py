"""Reference measurement of Flower (flwr 1.42) secure aggregation (SecAgg+).

The workload of flower_overhead.py (one float32 tensor of P values, x_i = sin(i); all N
clients train every round and return the model + 0.001 with 10 examples; FedAvg; no
evaluation), aggregated through Flower's SecAgg+: the ServerApp runs
`DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` and the ClientApp carries
`secaggplus_mod`. Neighbours and threshold default to what `fedtune bench overhead --secagg`
uses for the same cohort (k = min(n - 1, 3 * ceil(log2 n)), t = k // 2 + 1), so that both do
the same number of pairwise masks.
Set up the interpreter with scripts/reference/setup-venv.sh.
The last line printed is always: flower_s=<wall seconds> final_mean=<mean>
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network in the sandbox

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

from flower_overhead import wait_for_ray_exit


class ShiftClient(NumPyClient):
    def fit(self, parameters, config):
        return [parameters[0] + np.float32(0.001)], 10, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--neighbours", type=int, default=0, help="num_shares (0: as fedtune)")
    ap.add_argument("--threshold", type=int, default=0, help="(0: neighbours // 2 + 1)")
    ap.add_argument("--client-cpus", type=float, default=1.0,
                    help="Ray num_cpus per ClientApp (flwr's default is 2)")
    args = ap.parse_args()
    n, rounds, p = args.clients, args.rounds, args.params
    k = args.neighbours or min(n - 1, 3 * math.ceil(math.log2(n)))
    t = args.threshold or k // 2 + 1

    initial = np.sin(np.arange(p, dtype=np.float64)).astype(np.float32)
    expected = float(np.mean(np.sin(np.arange(p, dtype=np.float64)))) + 0.001 * rounds
    final: dict = {}

    class RecordingFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:
                final["x"] = parameters_to_ndarrays(params)[0]
            return params, metrics

    client_app = ClientApp(client_fn=lambda context: ShiftClient().to_client(),
                           mods=[secaggplus_mod])
    server_app = ServerApp()

    @server_app.main()
    def server_main(grid: Grid, context: Context) -> None:
        strategy = RecordingFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
            min_evaluate_clients=0, min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([initial]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(num_shares=k, reconstruction_threshold=t))
        workflow(grid, legacy)

    backend_config = {"client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0}}
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config=backend_config)
    wall = time.perf_counter() - t0

    if "x" not in final:
        sys.exit("simulation finished without a final model")
    x = final["x"]
    assert x.shape == (p,), x.shape
    final_mean = float(np.mean(x, dtype=np.float64))
    sys.stderr.flush()
    print(f"clients={n} rounds={rounds} params={p} neighbours={k} threshold={t} "
          f"expected_mean={expected:.9f} abs_err={abs(final_mean - expected):.3e}", flush=True)
    print(f"flower_s={wall:.3f} final_mean={final_mean:.9f}", flush=True)
    wait_for_ray_exit()


if __name__ == "__main__":
    main()
