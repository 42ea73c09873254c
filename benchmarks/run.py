"""Time poolkit against a memory copy and its peers on the cases of the fast-kernel issue.

For each case, in one run: poolkit, PyTorch CPU (channels-first and
channels-last), ONNX Runtime, JAX (each when installed), NumPy's
``sliding_window_view``, and ``np.copyto`` of the input. Each time is the best
of ``--repeats`` runs after a warm-up. The *floor* of a case is the bytes it
must move (input + output, or for a backward pass dy + x read and dx written)
divided by the copy bandwidth measured in the same run
(``2 * input bytes / copy time``).

Then the start-up and overhead targets: ``import poolkit`` and the first
call in new processes, with the kernels already in Numba's disk cache (best
of three processes); the per-call overhead of ``max_pool2d`` on a 1x1x8x8
input; and, in a new process each, the extra peak memory (resident set) of
a forward call beyond its output.

Prints a table, writes ``benchmarks/results/latest.json`` and
``benchmarks/results/latest.md``. ``--quick`` runs a subset in under a minute.

    python benchmarks/run.py [--quick] [--threads 2] [--repeats 5] [--only TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


@dataclass
class Case:
    name: str
    op: str  # "max" or "avg"
    shape: tuple[int, ...]  # channels-first
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    channels_last: bool = False
    backward: bool = False
    quick: bool = False
    family: str = "window"  # "window" (kernel, stride, padding), "global", or "adaptive" (to output_size)
    output_size: int = 1

    @property
    def rank(self) -> int:
        return len(self.shape) - 2


CASES = [
    Case("resnet-stem max 3x3 s2 p1", "max", (16, 64, 112, 112), 3, 2, 1, quick=True),
    Case("resnet-stem max 3x3 s2 p1, channels-last", "max", (16, 64, 112, 112), 3, 2, 1, channels_last=True),
    Case("resnet-stem avg 3x3 s2 p1", "avg", (16, 64, 112, 112), 3, 2, 1, quick=True),
    Case("vgg max 2x2 s2", "max", (8, 128, 112, 112), 2, 2, 0),
    Case("vgg avg 2x2 s2", "avg", (8, 128, 112, 112), 2, 2, 0),
    *(Case(f"yolo-spp max k{k} s1", "max", (8, 64, 64, 64), k, 1, k // 2, quick=k != 9) for k in (5, 9, 13)),
    *(Case(f"yolo-spp avg k{k} s1", "avg", (8, 64, 64, 64), k, 1, k // 2) for k in (5, 9, 13)),
    Case("resnet-stem max 3x3 s2 p1, backward", "max", (16, 64, 112, 112), 3, 2, 1, backward=True, quick=True),
    Case("resnet-stem avg 3x3 s2 p1, backward", "avg", (16, 64, 112, 112), 3, 2, 1, backward=True),
    Case("audio 1-D max k4 s4", "max", (32, 256, 16000), 4, 4, 0),
    Case("video 3-D max 2x2x2 s2", "max", (2, 32, 32, 64, 64), 2, 2, 0),
    *(
        Case(f"{family} {op} {'x'.join(map(str, shape[2:]))}{f' to {size}x{size}' if family == 'adaptive' else ''}",
             op, shape, family=family, output_size=size, quick=quick)
        for family, op, shape, size, quick in [
            ("global", "avg", (16, 2048, 7, 7), 1, True),
            ("global", "max", (16, 2048, 7, 7), 1, False),
            ("global", "avg", (16, 64, 112, 112), 1, False),
            ("global", "max", (16, 64, 112, 112), 1, True),
            ("adaptive", "avg", (16, 2048, 7, 7), 3, False),
            ("adaptive", "max", (16, 2048, 7, 7), 3, False),
            ("adaptive", "avg", (16, 64, 112, 112), 7, False),
            ("adaptive", "max", (16, 64, 112, 112), 5, False),
        ]
    ),
]  # fmt: skip


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def poolkit_runner(case: Case, x: np.ndarray):
    import poolkit as pk

    data = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if case.channels_last else x
    fn = getattr(
        pk,
        {"window": "{}_pool", "global": "global_{}_pool", "adaptive": "adaptive_{}_pool"}[case.family].format(case.op),
    )
    if case.family == "window":
        args, call = (case.kernel,), dict(stride=case.stride, padding=case.padding, channels_last=case.channels_last)
    else:
        args, call = ((case.output_size,) if case.family == "adaptive" else ()), dict(channels_last=case.channels_last)
    if not case.backward:
        return lambda: fn(data, *args, **call)
    y, pullback = pk.vjp(fn, data, *args, **call)
    dy = np.ones_like(y)
    return lambda: pullback(dy)


def torch_runner(case: Case, x: np.ndarray, channels_last: bool):
    try:
        import torch
    except ImportError:
        return None
    if channels_last and case.rank not in (2, 3):
        return None
    functional = torch.nn.functional
    if case.family == "window":
        fn = getattr(functional, f"{case.op}_pool{case.rank}d")
        args = (case.kernel, case.stride, case.padding)
    else:
        fn = getattr(functional, f"adaptive_{case.op}_pool{case.rank}d")
        args = (case.output_size,)
    tensor = torch.from_numpy(x)
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last if case.rank == 2 else torch.channels_last_3d)
    if not case.backward:
        return lambda: fn(tensor, *args)
    leaf = tensor.detach().requires_grad_(True)
    out = fn(leaf, *args)
    grad = torch.ones_like(out)
    return lambda: torch.autograd.grad(out, leaf, grad, retain_graph=True)


def onnxruntime_runner(case: Case, x: np.ndarray, threads: int):
    if case.backward or case.channels_last or case.family == "adaptive":
        return None
    try:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return None
    spatial = case.rank
    if case.family == "global":
        node = helper.make_node("GlobalMaxPool" if case.op == "max" else "GlobalAveragePool", ["x"], ["y"])
    else:
        node = helper.make_node(
            "MaxPool" if case.op == "max" else "AveragePool",
            ["x"],
            ["y"],
            kernel_shape=[case.kernel] * spatial,
            strides=[case.stride] * spatial,
            pads=[case.padding] * (2 * spatial),
            **({"count_include_pad": 1} if case.op == "avg" else {}),
        )
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ONNX Runtime's idle threads spin by default, which would steal the cores from the libraries timed after it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del onnx
    return lambda: session.run(None, {"x": x})


def jax_runner(case: Case, x: np.ndarray):
    if case.backward or case.channels_last or case.family == "adaptive":
        return None
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if case.family == "global":
        reduce = jax.jit(lambda a: (jnp.max if case.op == "max" else jnp.mean)(a, axis=tuple(range(2, a.ndim))))
        data = jnp.asarray(x)
        return lambda: reduce(data).block_until_ready()
    window = (1, 1) + (case.kernel,) * case.rank
    strides = (1, 1) + (case.stride,) * case.rank
    pads = ((0, 0), (0, 0)) + ((case.padding, case.padding),) * case.rank
    if case.op == "max":
        fn = jax.jit(lambda a: jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, window, strides, pads))
    else:
        area = float(case.kernel**case.rank)
        fn = jax.jit(lambda a: jax.lax.reduce_window(a, 0.0, jax.lax.add, window, strides, pads) / area)
    data = jnp.asarray(x)
    return lambda: fn(data).block_until_ready()


def numpy_runner(case: Case, x: np.ndarray):
    """The plain NumPy way: pad, take a sliding-window view, reduce."""
    if case.backward or case.channels_last or case.family == "adaptive":
        return None
    axes = tuple(range(2, x.ndim))
    fill = -np.inf if case.op == "max" else 0.0
    reduce = np.max if case.op == "max" else np.mean
    if case.family == "global":
        return lambda: reduce(x, axis=axes)

    def run():
        padded = np.pad(x, [(0, 0), (0, 0)] + [(case.padding, case.padding)] * case.rank, constant_values=fill)
        view = np.lib.stride_tricks.sliding_window_view(padded, (case.kernel,) * case.rank, axis=axes)
        view = view[(slice(None), slice(None)) + (slice(None, None, case.stride),) * case.rank]
        return reduce(view, axis=tuple(range(-case.rank, 0)))

    return run


def measure(case: Case, repeats: int, threads: int) -> dict:
    x = np.random.default_rng(0).standard_normal(case.shape).astype(np.float32)
    copy_target = np.empty_like(x)
    copy_time = best_of(lambda: np.copyto(copy_target, x), repeats)
    bandwidth = 2 * x.nbytes / copy_time
    out = poolkit_runner(case, x)()
    moved = x.nbytes + out.nbytes if not case.backward else 2 * x.nbytes + out.nbytes
    floor = moved / bandwidth
    runners = {
        "poolkit": poolkit_runner(case, x),
        "torch": torch_runner(case, x, channels_last=False),
        "torch-channels-last": torch_runner(case, x, channels_last=True),
        "onnxruntime": onnxruntime_runner(case, x, threads),
        "jax": jax_runner(case, x),
        "numpy-sliding-window": numpy_runner(case, x) if x.nbytes < 2**28 else None,
    }
    times = {name: best_of(fn, repeats) for name, fn in runners.items() if fn is not None}
    peers = {k: v for k, v in times.items() if k != "poolkit"}
    fastest_peer = min(peers, key=peers.get) if peers else None
    return {
        "case": case.name,
        "shape": list(case.shape),
        "copy_s": copy_time,
        "floor_s": floor,
        "times_s": times,
        "poolkit_over_floor": times["poolkit"] / floor,
        "fastest_peer": fastest_peer,
        "poolkit_over_fastest_peer": times["poolkit"] / peers[fastest_peer] if fastest_peer else None,
    }


STARTUP = """
import json, time
start = time.perf_counter()
import poolkit as pk
imported = time.perf_counter()
import numpy as np
pk.max_pool2d(np.ones((1, 1, 8, 8), np.float32), 2)
print(json.dumps({"import_s": imported - start, "first_call_s": time.perf_counter() - imported}))
"""

MEMORY = """
import json, sys
import numpy as np, poolkit as pk
def resident(field):  # VmRSS (now) or VmHWM (the high-water mark) of this process, in bytes
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))
op, shape = sys.argv[1], tuple(map(int, sys.argv[2:]))
pool = getattr(pk, op + "_pool2d")
pool(np.ones((1, 1, 9, 9), np.float32), 3, 2, 1)  # loads the kernels
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the high-water mark starts again from the resident set now
before = resident("VmRSS")
y = pool(x, 3, 2, 1)
peak = resident("VmHWM")
print(json.dumps({"extra_bytes": peak - before - y.nbytes, "input_bytes": x.nbytes, "output_bytes": y.nbytes}))
"""

MEMORY_CASES = [("max", (16, 64, 112, 112)), ("avg", (16, 64, 112, 112))]


def in_fresh_process(code: str, *args: str) -> dict:
    """Run ``code`` in a new interpreter (with this one's environment) and read the JSON line it prints."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def startup(repeats: int) -> dict:
    """Start-up times (best of three fresh processes after one that fills the cache), per-call overhead and
    the extra peak memory of forward calls (Linux: the ``VmHWM`` of ``/proc/self/status``)."""
    in_fresh_process(STARTUP)
    starts = [in_fresh_process(STARTUP) for _ in range(3)]
    import poolkit as pk

    tiny = np.ones((1, 1, 8, 8), np.float32)
    pk.max_pool2d(tiny, 2)
    overhead = min(timeit.repeat(lambda: pk.max_pool2d(tiny, 2), number=1000, repeat=repeats)) / 1000
    memory = []
    if sys.platform.startswith("linux"):
        for op, shape in MEMORY_CASES:
            found = in_fresh_process(MEMORY, op, *map(str, shape))
            memory.append({"op": op, "shape": list(shape), **found})
    return {
        "import_s": min(s["import_s"] for s in starts),
        "first_call_s": min(s["first_call_s"] for s in starts),
        "overhead_s": overhead,
        "memory": memory,
    }


def startup_text(found: dict) -> str:
    """The lines printed, and written under the table, for :func:`startup`'s measurements."""
    lines = [
        f"- `import poolkit`: {found['import_s']:.2f} s; first call (`max_pool2d`, kernels in the disk cache): "
        f"{found['first_call_s']:.2f} s (each the best of three new processes)",
        f"- per-call overhead, `max_pool2d` on 1x1x8x8: {found['overhead_s'] * 1e6:.1f} us",
    ]
    for m in found["memory"]:
        shape = "x".join(map(str, m["shape"]))
        lines.append(
            f"- extra peak memory of `{m['op']}_pool2d(x, 3, 2, 1)` on {shape}, beyond its "
            f"{m['output_bytes'] / 2**20:.1f} MiB output: {m['extra_bytes'] / 2**20:.1f} MiB "
            f"(input {m['input_bytes'] / 2**20:.0f} MiB)"
        )
    return "\n".join(lines) + "\n"


def markdown(results: list[dict], machine: str) -> str:
    names = ["poolkit", "torch", "torch-channels-last", "onnxruntime", "jax", "numpy-sliding-window"]
    lines = [
        f"Measured on {machine}. Times in ms (best of the repeats); ratios below 1 mean poolkit is faster.",
        "",
        "| case | floor | " + " | ".join(names) + " | poolkit / floor | poolkit / fastest peer |",
        "|---|---" + "|---" * len(names) + "|---|---|",
    ]
    for r in results:
        cells = [f"{r['times_s'][n] * 1e3:.2f}" if n in r["times_s"] else "-" for n in names]
        peer = r["poolkit_over_fastest_peer"]
        peer_text = f"{peer:.2f} ({r['fastest_peer']})" if peer is not None else "-"
        lines.append(
            f"| {r['case']} | {r['floor_s'] * 1e3:.2f} | "
            + " | ".join(cells)
            + f" | {r['poolkit_over_floor']:.2f} | {peer_text} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in under a minute")
    parser.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="run the cases whose name contains this text (no files written)")
    args = parser.parse_args()

    os.environ["POOLKIT_NUM_THREADS"] = str(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    cases = [c for c in CASES if c.quick] if args.quick else CASES
    cases = [c for c in cases if args.only in c.name]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    results = []
    for case in cases:
        result = measure(case, args.repeats, args.threads)
        results.append(result)
        times = "  ".join(f"{k} {v * 1e3:.2f}" for k, v in result["times_s"].items())
        print(f"{case.name:42s} floor {result['floor_s'] * 1e3:6.2f} ms | {times} | "
              f"poolkit/floor {result['poolkit_over_floor']:.2f}", flush=True)  # fmt: skip
    if args.only and args.only not in "start-up":
        return
    started = startup(args.repeats)
    print(startup_text(started), flush=True)
    if args.only:
        return
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": machine, "quick": args.quick, "results": results, "startup": started}
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "latest.md").write_text(markdown(results, machine) + "\n" + startup_text(started))
    print()
    print(markdown(results, machine))


if __name__ == "__main__":
    main()
