#!/usr/bin/env python3
"""Golden (epsilon, noise multiplier) values from Google's dp-accounting RdpAccountant.

For a grid of (z, q, T, delta) points spanning z 0.5-5, q 1e-4-0.5, T 1-1e5 and delta
1e-10-1e-3, under both sampling schemes:
- poisson: RdpAccountant() (add-or-remove-one), PoissonSampledDpEvent(q, GaussianDpEvent(z))
- fixed:   RdpAccountant(neighboring_relation=REPLACE_ONE),
           SampledWithoutReplacementDpEvent(n, m, GaussianDpEvent(z)) with q = m / n
each self-composed T times, and epsilon at delta. A second list composes the adaptive-clipping
count query (a second Gaussian on the same sample). privacy/tests/accountant_golden.rs reads
the JSON this writes and requires `fedtune privacy`'s accountant within 0.5% relative.

Run:  scripts/reference/setup-dp-venv.sh && \
      ~/.cache/fedtune/dp-venv/bin/python scripts/reference/golden_dp_accounting.py
"""
import importlib.metadata
import itertools
import json
import os

from absl import logging
import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "privacy", "tests", "fixtures",
                   "dp_accounting.json")

# (n, m) pairs give q = m / n exactly for the fixed scheme.
RATES = [(100_000, 10), (10_000, 10), (1000, 10), (1000, 100), (100, 25), (100, 50)]
NOISE = [0.5, 1.0, 2.0, 5.0]
ROUNDS = [1, 100, 10_000, 100_000]
DELTAS = [1e-10, 1e-6, 1e-3]


def epsilon(sampling, n, m, z, rounds, delta, count_z=None):
    gaussian = dp_event.GaussianDpEvent(z)
    if count_z is not None:
        gaussian = dp_event.ComposedDpEvent([gaussian, dp_event.GaussianDpEvent(count_z)])
    if sampling == "poisson":
        acc = rdp.RdpAccountant()
        event = dp_event.PoissonSampledDpEvent(m / n, gaussian)
    else:
        acc = rdp.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        event = dp_event.SampledWithoutReplacementDpEvent(n, m, gaussian)
    acc.compose(dp_event.SelfComposedDpEvent(event, rounds))
    return acc.get_epsilon(delta)


def main():
    # Orders whose fractional series does not converge are left out, with a warning each; the
    # Rust accountant leaves out the same orders.
    logging.set_verbosity(logging.ERROR)
    points = []
    # Every rate, noise and scheme; rounds and delta rotate with them so that each scheme sees
    # every value of every axis without the full product (which is slow in Python).
    for (r, (n, m)), (k, z), (s, sampling) in itertools.product(
            enumerate(RATES), enumerate(NOISE), enumerate(["poisson", "fixed"])):
        rounds = ROUNDS[(k + r + s) % len(ROUNDS)]
        delta = DELTAS[(k + 2 * r + s) % len(DELTAS)]
        eps = epsilon(sampling, n, m, z, rounds, delta)
        points.append(dict(sampling=sampling, population=n, cohort=m, noise_multiplier=z,
                           rounds=rounds, delta=delta, epsilon=eps))
    with_count = []
    for sampling in ["poisson", "fixed"]:
        for (n, m), z in [((10_000, 100), 1.0), ((1000, 50), 0.8)]:
            count_z = 2 * m / 20  # adaptive clipping's default sigma_b = K/20, multiplier 2*sigma_b
            eps = epsilon(sampling, n, m, z, 1000, 1e-6, count_z)
            with_count.append(dict(sampling=sampling, population=n, cohort=m,
                                   noise_multiplier=z, count_noise_multiplier=count_z,
                                   rounds=1000, delta=1e-6, epsilon=eps))
    out = dict(source="dp-accounting " + importlib.metadata.version("dp-accounting"),
               points=points, with_count_query=with_count)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {len(points)} + {len(with_count)} points to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
