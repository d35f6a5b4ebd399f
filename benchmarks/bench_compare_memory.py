"""Peak memory of `compare` against the number of seeds: does it stay flat?

Each comparison runs in a fresh child process (``python -c``), writing into a temporary result folder;
its peak resident set size is the child's own ``ru_maxrss`` (``os.wait4``), so imports, the dataset
and everything the comparison allocates count, and no earlier run's peak does. With a folder a
finished run's rows live on disk only and the engine trains one memory-bound chunk of runs at a
time, so the peak should stay flat in the number of seeds apart from O(1) bookkeeping per run.

    .venv/bin/python benchmarks/bench_compare_memory.py                      # digits, 1 epoch, seeds 50 and 400
    .venv/bin/python benchmarks/bench_compare_memory.py --seeds 25,100,400 --probe
    .venv/bin/python benchmarks/bench_compare_memory.py --dataset fashion-mnist --epochs 1 --seeds 2,8 --hidden 32
    .venv/bin/python benchmarks/bench_compare_memory.py --src /path/to/other/checkout/src   # another version

Prints one row per seed count (runs, wall seconds, peak RSS, the plan's memory estimate) and the
machine (CPU, cores, load average, memory).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
import initlab
from initlab.experiments import compare as ex
args = json.loads(sys.argv[1])
spec = ex.CompareSpec(inits=args["inits"], dataset=args["dataset"], seeds=args["seeds"], hidden=args["hidden"],
                      train=ex.TrainConfig(epochs=args["epochs"]), device="cpu", engine=args["engine"],
                      probe=args["probe"])
est = ex.estimate_memory(spec, ex.load_dataset(spec.dataset))
t = time.perf_counter()
res = ex.run_compare(spec, out=args["out"])
print(json.dumps({"seconds": time.perf_counter() - t, "estimate": est, "epoch_rows": len(res.metrics)}))
"""


def run_one(src: str, params: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        with open(Path(tmp) / "stdout", "w+") as so, open(Path(tmp) / "stderr", "w+") as se:
            child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({**params, "out": str(out)})],
                                     env=env, stdout=so, stderr=se, text=True)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the maximum over children
            child.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            so.seek(0), se.seek(0)
            stdout, stderr = so.read(), se.read()
        if child.returncode != 0 or not stdout.strip():
            raise SystemExit(f"compare with {params['seeds']} seeds failed:\n{stderr[-2000:]}")
        folder = sum(f.stat().st_size for f in out.iterdir())
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall": wall, "rss": usage.ru_maxrss * 1024,
            "folder": folder}


def machine() -> str:
    cpuinfo, meminfo = Path("/proc/cpuinfo").read_text(), Path("/proc/meminfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {mem / 1024:.0f} GiB; load average {load}; Python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", default="50,400", help="comma-separated seed counts")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--inits", default="zero,random,xavier,he")
    p.add_argument("--hidden", default="128")
    p.add_argument("--engine", default="batched", help="batched (default: no engine measurement) | single | auto")
    p.add_argument("--probe", action="store_true", help="record probe statistics (default: --no-probe)")
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="initlab to import")
    a = p.parse_args()
    print(machine())
    print(f"{a.dataset}, hidden {a.hidden}, {a.epochs} epoch(s), inits {a.inits}, engine {a.engine}, "
          f"probe {'on' if a.probe else 'off'}; initlab from {a.src}")
    print(f"{'seeds':>6} {'runs':>6} {'wall s':>7} {'peak RSS':>10} {'folder':>9} {'estimate':>10} {'chunk':>6}")
    for seeds in [int(s) for s in a.seeds.split(",")]:
        r = run_one(a.src, {"dataset": a.dataset, "seeds": seeds, "epochs": a.epochs, "inits": a.inits,
                            "hidden": a.hidden, "engine": a.engine, "probe": a.probe})
        est = r["estimate"]
        peak = est.get("data", 0) + est.get("total_on_disk", est["total"])  # with a folder, as compare runs here
        print(f"{seeds:>6} {r['epoch_rows'] // a.epochs:>6} {r['wall']:>7.1f} {r['rss'] / 2**20:>7.0f} MiB "
              f"{r['folder'] / 2**20:>5.1f} MiB {peak / 2**20:>6.0f} MiB {est['group_size']:>6}", flush=True)


if __name__ == "__main__":
    main()
