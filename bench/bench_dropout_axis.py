"""Benchmark: the dropout axis fused or not. For each architecture `auto` trains fused on a CPU, the
default grid's two dropout rates x R repeats of one (units, batch size) as one program of 2R lanes
(what the stage now runs) against two programs of R lanes, one per rate (what it ran before), one
after another on one core, as a local worker of the stage trains them (pinned, XLA and BLAS threads
limited to match, through seqsweep.runtime).

Each program trains 2 epochs: the second is the steady cost per repeat-epoch, the first minus the
second is the per-program overhead (compilation, the lanes' models built). Random arrays of the
prepared shapes (speed does not depend on the values), --n-train examples (default 1024: 16 steps of
64), so whole epochs fit in a few minutes.

    python bench/bench_dropout_axis.py                       # units 100, batch 64, R = 10
    python bench/bench_dropout_axis.py --units 10 --repeats 5 --archs har:lstm"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

RATES = (0.25, 0.5)  # the default grid's model.dropout
ARCHS = "har:lstm,har:cnn_lstm,har:stacked_lstm,imdb:lstm_recurrent_dropout"


def arrays_for(dataset: str, n_train: int, n_test: int = 64):
    import numpy as np

    rng = np.random.default_rng(0)
    if dataset == "har":
        X = {s: rng.normal(size=(n, 128, 9)).astype(np.float32) for s, n in (("train", n_train), ("test", n_test))}
        y = {s: rng.integers(0, 6, n) for s, n in (("train", n_train), ("test", n_test))}
        shape = {"timesteps": 128, "channels": 9, "n_classes": 6}
    else:
        X = {s: rng.integers(1, 5000, (n, 500)).astype(np.int32) for s, n in (("train", n_train), ("test", n_test))}
        y = {s: rng.integers(0, 2, n) for s, n in (("train", n_train), ("test", n_test))}
        shape = {"num_words": 5000, "maxlen": 500}
    return {f"X_{s}": X[s] for s in X} | {f"y_{s}": y[s] for s in y}, shape


def timed(program, arrays) -> tuple[float, float]:
    """(steady seconds of the second epoch, overhead of the first beyond it) for one program."""
    from seqsweep import engines

    marks: dict[int, float] = {}
    started = time.perf_counter()
    engines.train("fused", program, arrays, on_epoch=lambda _i, e, _l: marks.setdefault(e, time.perf_counter()))
    first, steady = marks[1] - started, marks[2] - marks[1]
    return steady, first - steady


def child(args) -> None:
    from dataclasses import replace

    from seqsweep import engines
    from seqsweep.grid import Config

    dataset, arch = args.arch.split(":")
    R = args.repeats
    arrays, shape = arrays_for(dataset, args.n_train)
    config = Config(args.units, args.batch, RATES[0], 2)
    seeds = tuple(range(1, 2 * args.repeats + 1))
    apart = [  # one program per rate, R lanes each
        timed(engines.Program(dataset, arch, replace(config, dropout=rate), seeds[i * R : (i + 1) * R], shape), arrays)
        for i, rate in enumerate(RATES)
    ]
    together = timed(  # one program of 2R lanes, each at its own rate
        engines.Program(dataset, arch, config, seeds, shape, dropouts=tuple(r for r in RATES for _ in range(R))), arrays
    )
    lanes = 2 * args.repeats
    print(
        "ROW "
        + json.dumps(
            {
                "arch": args.arch,
                "units": args.units,
                "batch": args.batch,
                "repeats": args.repeats,
                "n_train": args.n_train,
                "apart_s_per_repeat_epoch": sum(s for s, _ in apart) / lanes,
                "apart_overhead_s": sum(o for _, o in apart),
                "together_s_per_repeat_epoch": together[0] / lanes,
                "together_overhead_s": together[1],
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=ARCHS)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="R: repeats per configuration")
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--arch", help=argparse.SUPPRESS)  # the child's one measurement
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.arch:
        os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[0]])
        return child(args)

    from seqsweep.runtime import Runtime

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **Runtime("fused", "jax", "cpu", deterministic=True).env(threads=1),
    }
    rows = []
    print(f"one core; units {args.units}, batch {args.batch}, {args.repeats} repeats x rates {RATES}, n={args.n_train}")
    for arch in args.archs.split(","):
        cmd = [sys.executable, __file__, "--arch", arch, *sys.argv[1:]]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{arch} failed:\n{done.stderr[-3000:]}")
        row = json.loads(next(line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")))
        rows.append(row)
        ratio = row["apart_s_per_repeat_epoch"] / row["together_s_per_repeat_epoch"]
        print(
            f"{arch:30} apart (2 x {args.repeats} lanes) {row['apart_s_per_repeat_epoch']:.4f} s/repeat-epoch, "
            f"overhead {row['apart_overhead_s']:.1f} s | together ({2 * args.repeats} lanes) "
            f"{row['together_s_per_repeat_epoch']:.4f}, overhead {row['together_overhead_s']:.1f} s | "
            f"together {ratio:.2f}x the throughput",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
