#!/usr/bin/env python3
"""Time for a run to reach another run's final held-out perplexity.

    scripts/time_to_target.py runs/SYNC runs/BUFFERED

Reads each run's metrics.jsonl (one line per committed version: the training clients'
held-out perplexity when measured, and the seconds from the previous commit), takes the
first run's final perplexity as the target, and prints for each run the wall time at which
its global model first reached it. Use `--eval-every 1` so every version is measured.
"""
import json
import sys


def curve(run):
    t, out = 0.0, []
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            t += r.get("seconds") or 0.0
            seen = r.get("seen")
            if seen is not None:
                out.append((r["round"], t, seen["perplexity"]))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs = sys.argv[1:]
    curves = [curve(r) for r in runs]
    target = curves[0][-1][2]
    print(f"target: {runs[0]}'s final perplexity {target:.3f}")
    reached = []
    for run, c in zip(runs, curves):
        hit = next(((v, t) for v, t, p in c if p <= target), None)
        if hit is None:
            print(f"{run}: not reached (best {min(p for _, _, p in c):.3f}, {c[-1][1]:.1f} s)")
        else:
            print(f"{run}: version {hit[0]} at {hit[1]:.1f} s")
            reached.append(hit[1])
    if len(reached) == 2 and reached[1] > 0:
        print(f"ratio: {reached[0] / reached[1]:.2f}x")


if __name__ == "__main__":
    main()
