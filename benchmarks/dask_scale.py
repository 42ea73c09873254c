"""poolkit.dask at scale: pool an on-disk array larger than memory, and compare throughput with in-memory poolkit.

Part 1 (scale): the script writes a ``--gb`` GB float32 image, shape
``(1, 1, side, side)``, to an uncompressed Zarr array in chunks of about
``--chunk-mb`` MB, then pools it into another Zarr array with
``poolkit.dask`` on the threaded scheduler: avg 2x2 stride 2 (no halo, the
pyramid step) and max 3x3 stride 2 padding 1 (a halo of one cell), the latter
also with ``ordered=False`` (by default a whole pass runs the blocks in order
along both halo axes; unordered, Dask's order decides what it holds). Each
pooling runs in a fresh process, which reports its peak resident memory
(``ru_maxrss``) and its growth over the resident memory before the
computation (the interpreter, NumPy, Numba, Dask), counted in input chunks, so
that "bounded by a few chunks" can be read off directly. A few output tiles, at the array's corner
and across chunk boundaries, are checked against in-memory poolkit.

Part 2 (throughput): for an array that fits (``--fit-gb``, shape
``(4, 4, side, side)``), the best of ``--repeats`` runs, taken in turns, of
in-memory poolkit and of ``poolkit.dask`` on the same array in memory (``da.from_array``,
``--chunk-mb`` chunks), on the same number of threads. Dask writes each output chunk
into a new array as it is done (``da.store``), as the in-memory op writes its result;
``persist()``, which keeps each output chunk where its block wrote it (no copy), and
``compute()``, which also gathers the chunks into one array at the end (one more copy
of the output), are timed and printed too. The target is a ratio (dask / in-memory) of
at most 1.5.

Before writing anything the script checks the free disk space under ``--dir``
(the input plus both outputs, 1.5 x ``--gb``, plus 1 GB) and the available
memory for part 2, and stops with a message if either is short. The data is
deleted at the end unless ``--keep``.

    python benchmarks/dask_scale.py [--gb 8] [--dir /tmp] [--chunk-mb 64] [--fit-gb 1] [--threads N]
                                    [--repeats 5] [--keep] [--json results.json]

To run the same pooling on a multi-machine cluster, put the input where every
worker can read it (a shared file system or object storage: ``da.from_zarr("s3://...")``),
connect a ``distributed.Client("tcp://scheduler:8786")`` before computing,
and write the output there too; the graph is the same.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

POOLS = {
    "avg 2x2 s2": ("avg", dict(kernel_size=2)),
    "max 3x3 s2 p1": ("max", dict(kernel_size=3, stride=2, padding=1)),
}
# Part 1 also runs the pooling with a halo with ``ordered=False`` (the default orders a whole pass).
ON_DISK = [(name, op, params, None) for name, (op, params) in POOLS.items()] + [
    ("max 3x3 s2 p1 unordered", *POOLS["max 3x3 s2 p1"], False)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=8.0, help="size of the on-disk input in GB (default 8)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the Zarr arrays go (default: temp dir)")
    parser.add_argument("--chunk-mb", type=float, default=64.0, help="chunk size in MB (default 64)")
    parser.add_argument("--fit-gb", type=float, default=1.0, help="size of the in-memory array of part 2 (GB)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for Dask and poolkit")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing in part 2 (best is kept)")
    parser.add_argument("--keep", action="store_true", help="keep the Zarr arrays")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    os.environ["POOLKIT_NUM_THREADS"] = str(args.threads)

    side = _side(args.gb * 1e9 / 4)
    chunk = min(_side(args.chunk_mb * 1e6 / 4), side)
    root = Path(args.dir)
    needed = 1.5 * args.gb * 1e9 + 1e9
    free = shutil.disk_usage(root).free
    if free < needed:
        raise SystemExit(
            f"--gb {args.gb} needs about {needed / 1e9:.1f} GB free under {root} (input, two outputs and 1 GB "
            f"spare); {free / 1e9:.1f} GB is free. Use a smaller --gb or another --dir"
        )
    _check_memory(args.fit_gb)
    work = Path(tempfile.mkdtemp(prefix="poolkit-dask-scale-", dir=root))
    results: dict = {"threads": args.threads, "chunk": [1, 1, chunk, chunk]}
    try:
        source = work / "input.zarr"
        print(f"writing {args.gb:g} GB input: shape (1, 1, {side}, {side}) float32, chunks {chunk}x{chunk}, {source}")
        seconds = _in_child(_generate, str(source), side, chunk)["seconds"]
        print(f"  written in {seconds:.1f} s ({args.gb / seconds:.2f} GB/s)")
        results["scale"] = {"gb": side * side * 4 / 1e9, "rows": []}
        print(
            f"\n{'pool (disk -> disk)':<24}{'seconds':>9}{'GB/s':>7}{'RSS before MB':>15}{'peak MB':>9}"
            f"{'growth in chunks':>18}  check"
        )
        for number, (name, op, params, ordered) in enumerate(ON_DISK):
            target = str(work / f"{number}.zarr")
            row = _in_child(_pool_on_disk, str(source), target, op, params, ordered, args.threads)
            row["name"] = name
            row["rss_chunks"] = (row["peak_rss_mb"] - row["rss_before_mb"]) / (chunk * chunk * 4 / 1e6)
            results["scale"]["rows"].append(row)
            print(
                f"{name:<24}{row['seconds']:>9.2f}{row['gb_per_s']:>7.2f}{row['rss_before_mb']:>15.0f}"
                f"{row['peak_rss_mb']:>9.0f}{row['rss_chunks']:>18.1f}  {row['check']}"
            )
        results["throughput"] = _in_child(_throughput, args.fit_gb, args.chunk_mb, args.threads, args.repeats)
        fit = results["throughput"]
        print(f"\nthroughput on {fit['shape']} float32 in memory ({fit['gb']:.2f} GB), chunks {fit['chunks']}")
        print(
            f"{'pool':<22}{'in-memory s':>13}{'dask s':>9}{'dask/in-memory':>16}{'persist() s':>13}{'ratio':>7}"
            f"{'compute() s':>13}{'ratio':>7}"
        )
        for row in fit["rows"]:
            print(
                f"{row['name']:<22}{row['in_memory']:>13.3f}{row['dask']:>9.3f}{row['ratio']:>16.2f}"
                f"{row['dask_persist']:>13.3f}{row['persist_ratio']:>7.2f}"
                f"{row['dask_compute']:>13.3f}{row['compute_ratio']:>7.2f}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _side(cells: float) -> int:
    """The side of a square of about ``cells`` cells, a multiple of 64."""
    return max(64, int(math.sqrt(cells)) // 64 * 64)


def _check_memory(fit_gb: float) -> None:
    """Part 2 holds the array, its copy for dask's output and the outputs: about 2.5 x ``--fit-gb``."""
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")
    except OSError:
        return
    available = next((int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")), None)
    if available is not None and available < 2.5 * fit_gb * 1e9:
        raise SystemExit(
            f"--fit-gb {fit_gb} needs about {2.5 * fit_gb:.1f} GB of memory; {available / 1e9:.1f} GB is available"
        )


def _in_child(function, *args):
    """Run ``function(*args)`` in a fresh process (its own peak RSS) and return its dict."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args))
    process.start()
    result = receiver.recv()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{function.__name__} failed in its process: {result['error']}")
    return result


def _child(sender, function, args) -> None:
    try:
        sender.send(function(*args))
    except Exception as err:  # reported by the parent, which stops
        sender.send({"error": repr(err)})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _generate(path: str, side: int, chunk: int) -> dict:
    import dask
    import dask.array as da

    start = time.perf_counter()
    data = da.random.default_rng(0).standard_normal((1, 1, side, side), dtype=np.float32, chunks=(1, 1, chunk, chunk))
    with dask.config.set(scheduler="threads"):
        da.to_zarr(data, path, compressors=None)
    return {"seconds": time.perf_counter() - start}


def _pool_on_disk(source: str, target: str, op: str, params: dict, ordered: bool | None, threads: int) -> dict:
    import dask
    import dask.array as da

    import poolkit as pk
    import poolkit.dask as pkd

    x = da.from_zarr(source)
    y = pkd.pool(x, op, **params, ordered=ordered)
    y = y.rechunk(tuple(max(c) for c in y.chunks))  # regular chunks, as Zarr wants
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        da.to_zarr(y, target, compressors=None)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    # Tiles of the stored output against in-memory poolkit: the corner, and one across the first chunk edges.
    stride = params.get("stride", params["kernel_size"])
    tiles = (0, max(x.chunks[2][0] // stride - 128, 0))
    check = all(_tile_matches(x, da.from_zarr(target), pk, op, params, first) for first in tiles)
    return {
        "seconds": seconds,
        "gb_per_s": x.nbytes / 1e9 / seconds,
        "peak_rss_mb": peak,
        "rss_before_mb": baseline,
        "check": "ok" if check else "MISMATCH",
    }


def _tile_matches(x, stored, pk, op: str, params: dict, first: int, size: int = 256) -> bool:
    """Whether output windows ``first .. first+size-1`` (both axes) equal in-memory pooling of their input."""
    kernel, pad = params["kernel_size"], params.get("padding", 0)
    stride = params.get("stride", kernel)
    lo = first * stride - pad
    hi = (first + size - 1) * stride - pad + kernel
    window = x[:, :, max(lo, 0) : hi, max(lo, 0) : hi].compute()
    pad_left = max(-lo, 0)
    expected = getattr(pk, f"{op}_pool")(window, kernel, stride, ((pad_left, 0), (pad_left, 0)))
    got = stored[:, :, first : first + size, first : first + size].compute()
    return got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5)


def _throughput(fit_gb: float, chunk_mb: float, threads: int, repeats: int) -> dict:
    import dask
    import dask.array as da

    import poolkit as pk
    import poolkit.dask as pkd

    side = _side(fit_gb * 1e9 / 4 / 16)
    x = np.random.default_rng(0).standard_normal((4, 4, side, side), dtype=np.float32)
    chunk_side = min(_side(chunk_mb * 1e6 / 4), side)
    lazy = da.from_array(x, chunks=(1, 1, chunk_side, chunk_side))
    rows = []
    for name, (op, params) in POOLS.items():
        pooled = pkd.pool(lazy, op, **params)
        runs = {
            "in_memory": functools.partial(getattr(pk, f"{op}_pool"), x, **params),
            # each chunk written into a new array as it is done, as the in-memory op writes its result
            "dask": lambda pooled=pooled: da.store(pooled, np.empty(pooled.shape, pooled.dtype), lock=False),
            # persist() keeps the chunks the blocks wrote, in Dask's memory: no copy of the output
            "dask_persist": pooled.persist,
            # compute() also gathers the chunks into one array at the end: one more copy of the output
            "dask_compute": pooled.compute,
        }
        with dask.config.set(scheduler="threads", num_workers=threads):
            best = _best_interleaved(repeats, runs)
        rows.append(
            {"name": name, **best, "ratio": best["dask"] / best["in_memory"],
             "persist_ratio": best["dask_persist"] / best["in_memory"],
             "compute_ratio": best["dask_compute"] / best["in_memory"]}
        )  # fmt: skip
    return {"shape": list(x.shape), "gb": x.nbytes / 1e9, "chunks": [1, 1, chunk_side, chunk_side], "rows": rows}


def _best_interleaved(repeats: int, runs: dict) -> dict:
    """The best time of each run, taking turns so that a change in machine load hits both alike."""
    for run in runs.values():
        run()  # warm-up: compilation, page faults
    times: dict = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
