"""``poolkit demo``: train the same small CNN with each pooling layer and measure what the pooling changes.

The data are scikit-learn's bundled 8x8 handwritten digits (1,797 images; no
download), split once into 1,347 training and 450 test images. For each
pooling type the demo builds one network::

    Conv2d(1, 16, 3, padding=1) - ReLU - pool A - Conv2d(16, 32, 3, padding=1) - ReLU - pool B - Flatten - Linear(·, 10)

A *downsampling* pooling is used for both A and B (8x8 -> 4x4 -> 2x2); a
*head* pooling (global, adaptive, GeM, spatial pyramid) is B, after a 2x2 max
pool as A, and makes the classifier's input length independent of the image
size. Every pooling type is trained with the same seeds (each seed fixes the
convolution weights, the batch order and the pooling's random draws) with
Adam, and the demo reports:

* test accuracy, mean ± std over the seeds;
* shift robustness: accuracy on the test images shifted by one pixel up, down,
  left and right (zero fill), and how often the prediction stays the one for
  the unshifted image;
* input-size freedom: accuracy on the test images resized (bilinear) to other
  sizes, for the networks that accept them;
* training time and parameter count.

It prints a table, writes ``results.json`` and, with matplotlib, ``results.png``.
The command-line wiring is :func:`add_arguments` and :func:`run`; the demo needs
the ``[demo]`` extra (scikit-learn, rich, matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import poolkit

from . import nn

__all__ = ["add_arguments", "run", "POOLINGS", "available_poolings", "load_digits", "shift", "resize"]

WIDTHS = (16, 32)  # channels of the two convolutions
LEARNING_RATE = 3e-3
BATCH_SIZE = 32
DEFAULT_EPOCHS = 8
DEFAULT_SEEDS = 3
QUICK_EPOCHS = 1
QUICK_SEEDS = 1
TEST_SIZES = (6, 12, 16)
SHIFTS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


@dataclass(frozen=True)
class Pooling:
    """One row of the comparison: which :mod:`poolkit.nn` layer, how to build it, and where it goes."""

    name: str
    role: str  # "downsampling" (pool A and B) or "head" (pool B only)
    layer: str  # the class name in poolkit.nn
    make: Callable[[type, np.random.Generator], nn.Module]  # (layer class, generator for its draws) -> layer

    def available(self) -> bool:
        """Whether this poolkit has the layer and the op it runs."""
        cls = getattr(nn, self.layer, None)
        return cls is not None and hasattr(poolkit, cls.op_name)

    def build(self, rng: np.random.Generator) -> nn.Module:
        return self.make(getattr(nn, self.layer), rng)


POOLINGS = (
    Pooling("max", "downsampling", "MaxPool2d", lambda cls, rng: cls(2)),
    Pooling("avg", "downsampling", "AvgPool2d", lambda cls, rng: cls(2)),
    Pooling("l2", "downsampling", "LPPool2d", lambda cls, rng: cls(2, 2)),
    Pooling("min", "downsampling", "MinPool2d", lambda cls, rng: cls(2)),
    Pooling("stochastic", "downsampling", "StochasticPool2d", lambda cls, rng: cls(2, rng=rng)),
    Pooling("mixed", "downsampling", "MixedPool2d", lambda cls, rng: cls(2)),
    Pooling("antialiased", "downsampling", "AntialiasedMaxPool2d", lambda cls, rng: cls(2, 2)),
    Pooling("blur", "downsampling", "BlurPool2d", lambda cls, rng: cls()),
    Pooling("fractional", "downsampling", "FractionalMaxPool2d", lambda cls, rng: cls(2, output_ratio=0.7, rng=rng)),
    Pooling("gap", "head", "GlobalAvgPool", lambda cls, rng: cls()),
    Pooling("gmp", "head", "GlobalMaxPool", lambda cls, rng: cls()),
    Pooling("gem", "head", "GeM", lambda cls, rng: cls(3.0)),
    Pooling("adaptive", "head", "AdaptiveAvgPool2d", lambda cls, rng: cls(2)),
    Pooling("spp", "head", "SpatialPyramidPool", lambda cls, rng: cls((2, 1))),
)


def available_poolings() -> list[Pooling]:
    """The rows whose layer and op exist in this poolkit."""
    return [p for p in POOLINGS if p.available()]


# -- data ----------------------------------------------------------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 ``(N, 1, 8, 8)`` in ``[0, 1]``: ``(x_train, y_train, x_test, y_test)``.

    The split is fixed (a permutation from seed 0; 1,347 / 450 images), the
    same for every pooling and seed.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1347], order[1347:]
    return images[train], labels[train], images[test], labels[test]


def shift(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Move ``(N, C, H, W)`` images by ``rows`` down and ``cols`` right, filling with 0.

    Examples
    --------
    >>> import numpy as np
    >>> shift(np.arange(9.).reshape(1, 1, 3, 3), 1, -1)[0, 0]
    array([[0., 0., 0.],
           [1., 2., 0.],
           [4., 5., 0.]])
    """
    out = np.zeros_like(images)
    height, width = images.shape[-2:]
    out[..., max(rows, 0) : height + min(rows, 0), max(cols, 0) : width + min(cols, 0)] = images[
        ..., max(-rows, 0) : height + min(-rows, 0), max(-cols, 0) : width + min(-cols, 0)
    ]
    return out


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` weights of bilinear resampling with half-pixel centres (edge-clamped)."""
    centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    centres = np.clip(centres, 0, in_size - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = centres - low
    matrix = np.zeros((out_size, in_size))
    matrix[np.arange(out_size), low] += 1 - frac
    matrix[np.arange(out_size), high] += frac
    return matrix


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, C, H, W)`` images to ``size x size``.

    Examples
    --------
    >>> import numpy as np
    >>> resize(np.array([[[[0., 1.], [2., 3.]]]]), 4)[0, 0]
    array([[0.  , 0.25, 0.75, 1.  ],
           [0.5 , 0.75, 1.25, 1.5 ],
           [1.5 , 1.75, 2.25, 2.5 ],
           [2.  , 2.25, 2.75, 3.  ]])
    """
    rows = _bilinear_matrix(images.shape[-2], size)
    cols = _bilinear_matrix(images.shape[-1], size)
    return (rows @ images @ cols.T).astype(images.dtype)


# -- one network -------------------------------------------------------------------------------------------


def _generators(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams from one seed: weights, the pooling's draws, the classifier, the batch order."""
    names = ("init", "pool", "head", "order")
    return dict(zip(names, (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(names)))))


def build_network(pooling: Pooling, seed: int) -> nn.Sequential:
    """The demo's CNN with ``pooling``; ``seed`` fixes the convolution weights (the same for every pooling)."""
    rng = _generators(seed)
    features = [
        nn.Conv2d(1, WIDTHS[0], 3, padding=1, rng=rng["init"]),
        nn.ReLU(),
        pooling.build(rng["pool"]) if pooling.role == "downsampling" else nn.MaxPool2d(2),
        nn.Conv2d(WIDTHS[0], WIDTHS[1], 3, padding=1, rng=rng["init"]),
        nn.ReLU(),
        pooling.build(rng["pool"]),
        nn.Flatten(),
    ]
    probe = nn.Sequential(*features).eval()(np.ones((1, 1, 8, 8), dtype=np.float32))
    return nn.Sequential(*features, nn.Linear(probe.shape[1], 10, rng=rng["head"]))


def train_and_measure(
    pooling: Pooling, seed: int, data: tuple[np.ndarray, ...], epochs: int, on_epoch: Callable[[], None]
) -> dict:
    """Train one network and measure it; returns this seed's numbers."""
    x_train, y_train, x_test, y_test = data
    model = build_network(pooling, seed)
    optimizer = nn.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    order = _generators(seed)["order"]
    steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
    losses, accuracies, train_seconds = [], [], 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        loss = nn.train_epoch(
            model, loss_fn, optimizer, x_train, y_train,
            batch_size=BATCH_SIZE, rng=order, first_step=epoch * steps_per_epoch,
        )  # fmt: skip
        train_seconds += time.perf_counter() - start
        losses.append(loss)
        accuracies.append(nn.accuracy(model, x_test, y_test))
        on_epoch()
    clean = nn.predict(model, x_test)
    shifted = {name: nn.predict(model, shift(x_test, *offset)) for name, offset in SHIFTS.items()}
    sizes = {}
    for size in TEST_SIZES:
        try:
            sizes[size] = float(np.mean(nn.predict(model, resize(x_test, size)) == y_test))
        except nn.ShapeMismatchError:
            sizes[size] = None  # the classifier is tied to the 8x8 feature map
    return {
        "seed": seed,
        "accuracy": float(np.mean(clean == y_test)),
        "shift_accuracy": {name: float(np.mean(pred == y_test)) for name, pred in shifted.items()},
        "shift_consistency": {name: float(np.mean(pred == clean)) for name, pred in shifted.items()},
        "size_accuracy": sizes,
        "train_seconds": train_seconds,
        "loss_curve": losses,
        "accuracy_curve": accuracies,
        "parameters": model.num_parameters(),
        "learned": dict(_learned_values(model)),
    }


def _learned_values(model: nn.Sequential) -> Iterator[tuple[str, float]]:
    """The learned pooling values (GeM's p, mixed pooling's alpha), by layer."""
    for index, layer in enumerate(model):
        if isinstance(layer, (nn.GeM, nn.MixedPool2d)):
            yield f"{layer.op_param} ({'A' if index == 2 else 'B'})", round(float(np.mean(layer.current())), 4)


def summarise(pooling: Pooling, runs: list[dict]) -> dict:
    """Mean and spread over the seeds of one pooling's runs."""

    def mean_std(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    sizes = {}
    for size in TEST_SIZES:
        values = [run["size_accuracy"][size] for run in runs]
        sizes[str(size)] = None if any(v is None for v in values) else mean_std(values)
    return {
        "pooling": pooling.name,
        "role": pooling.role,
        "layer": repr(build_network(pooling, 0)[5]),
        "parameters": runs[0]["parameters"],
        "accuracy": mean_std([run["accuracy"] for run in runs]),
        "shift_accuracy": mean_std([np.mean(list(run["shift_accuracy"].values())) for run in runs]),
        "shift_consistency": mean_std([np.mean(list(run["shift_consistency"].values())) for run in runs]),
        "size_accuracy": sizes,
        "train_seconds": mean_std([run["train_seconds"] for run in runs]),
        "runs": [{**run, "size_accuracy": {str(k): v for k, v in run["size_accuracy"].items()}} for run in runs],
    }


# -- command line ------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (the ``poolkit demo`` subcommand)."""
    names = ", ".join(p.name for p in POOLINGS)
    parser.add_argument(
        "--quick", action="store_true",
        help=f"a smoke run: {QUICK_EPOCHS} epoch, {QUICK_SEEDS} seed (unless --epochs/--seeds say otherwise)",
    )  # fmt: skip
    parser.add_argument("--pool", default=None, help=f"comma-separated pooling types (default: all of {names})")
    parser.add_argument("--epochs", type=_positive_int, help=f"epochs per run (default {DEFAULT_EPOCHS})")
    parser.add_argument("--seeds", type=_positive_int, help=f"seeds per pooling (default {DEFAULT_SEEDS})")
    parser.add_argument("--out", default="poolkit-demo", help="output folder (default ./poolkit-demo)")


@contextlib.contextmanager
def _small_arrays() -> Iterator[None]:
    """Settings for 8x8 images, on which compiled kernels and threads gain nothing.

    One thread for BLAS and for poolkit, and poolkit's NumPy backend: the same
    results, and no kernel to compile on a fresh machine. A value the user has
    set in the environment is kept.
    """
    settings = {"POOLKIT_NUM_THREADS": "1", "POOLKIT_BACKEND": "numpy"}
    previous = {name: os.environ.get(name) for name in settings}
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    try:
        with limits:
            yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; returns the exit status (0 on success)."""
    try:
        import rich  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as err:
        print(
            f"poolkit demo needs scikit-learn (the bundled digits) and rich (progress and table); {err.name} is "
            "missing. Install them with: pip install 'poolkit[demo]'",
            file=sys.stderr,
        )
        return 1
    available = {p.name: p for p in available_poolings()}
    if args.pool is None:
        chosen = list(available.values())
    else:
        names = [name.strip() for name in args.pool.split(",") if name.strip()]
        unknown = [name for name in names if name not in available]
        if unknown or not names:
            print(
                f"poolkit demo: --pool {args.pool!r}: unknown pooling {', '.join(unknown) or '(none given)'}; "
                f"choose from {','.join(available)}",
                file=sys.stderr,
            )
            return 2
        chosen = [pooling for pooling in available.values() if pooling.name in names]  # downsampling rows first
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"poolkit demo: cannot create the output folder {str(out)!r}: {err}", file=sys.stderr)
        return 1
    with _small_arrays():
        results, seconds = _train_all(chosen, epochs, seeds)
    report = {
        "config": {
            "epochs": epochs, "seeds": list(range(seeds)), "batch_size": BATCH_SIZE, "optimizer": "Adam",
            "learning_rate": LEARNING_RATE, "widths": list(WIDTHS), "test_sizes": list(TEST_SIZES),
            "shifts": SHIFTS, "train_images": 1347, "test_images": 450,
        },
        "machine": {
            "python": platform.python_version(), "numpy": np.__version__, "poolkit": poolkit.__version__,
            "cpus": os.cpu_count(), "platform": platform.platform(),
        },
        "total_seconds": seconds,
        "results": results,
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_table(results, epochs, seeds, seconds)
    written = [out / "results.json"]
    try:
        written.append(_figure(results, out / "results.png"))
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'poolkit[demo]')")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _train_all(chosen: list[Pooling], epochs: int, seeds: int) -> tuple[list[dict], float]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    data = load_digits()
    started = time.perf_counter()
    results = []
    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("training", total=len(chosen) * seeds * epochs)
        for pooling in chosen:
            runs = []
            for seed in range(seeds):
                progress.update(task, description=f"{pooling.name} (seed {seed})")
                runs.append(train_and_measure(pooling, seed, data, epochs, lambda: progress.advance(task)))
            results.append(summarise(pooling, runs))
    return results, time.perf_counter() - started


def _print_table(results: list[dict], epochs: int, seeds: int, seconds: float) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"poolkit demo: 8x8 digits, {_count(epochs, 'epoch')} x {_count(seeds, 'seed')}, {seconds:.0f} s",
        box=box.SIMPLE,
    )
    headers = ["pooling", "params", "acc %", "shift acc %", "same %", *(f"{s}x{s} %" for s in TEST_SIZES)]
    for header in [*headers, "train s"]:
        table.add_column(header, justify="left" if header == "pooling" else "right", no_wrap=True)
    for index, row in enumerate(results):
        sizes = [row["size_accuracy"][str(size)] for size in TEST_SIZES]
        last_of_role = index + 1 < len(results) and results[index + 1]["role"] != row["role"]
        table.add_row(
            row["pooling"],
            f"{row['parameters']:,}",
            f"{100 * row['accuracy']['mean']:.1f}±{100 * row['accuracy']['std']:.1f}",
            f"{100 * row['shift_accuracy']['mean']:.1f}",
            f"{100 * row['shift_consistency']['mean']:.1f}",
            *("-" if size is None else f"{100 * size['mean']:.1f}" for size in sizes),
            f"{row['train_seconds']['mean']:.1f}",
            end_section=last_of_role,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a file or a pipe has no width to respect
    console.print(table)
    learned = [
        f"{row['pooling']} {name} = {np.mean([run['learned'][name] for run in row['runs']]):.3g}"
        for row in results
        for name in row["runs"][0]["learned"]
    ]
    print(
        "test acc: mean ± std over the seeds. shift: the test images moved 1 pixel up/down/left/right (accuracy, "
        "and how often the prediction stays the same). NxN: the test images resized (-: the network takes 8x8 "
        "only). The rows after the gap are head poolings: after a 2x2 max pool, they pool the last feature map for "
        "the classifier. train s: per seed." + (f" Learned (mean over seeds): {'; '.join(learned)}." if learned else "")
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _figure(results: list[dict], path: Path) -> Path:
    """Accuracy and shift consistency per pooling, and the test-accuracy curves; written without pyplot."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = [row["pooling"] for row in results]
    positions = np.arange(len(names))
    figure = Figure(figsize=(13, 4.5), layout="constrained")
    bars, consistency, curves = figure.subplots(1, 3)
    bars.bar(positions - 0.2, [100 * r["accuracy"]["mean"] for r in results], 0.4,
             yerr=[100 * r["accuracy"]["std"] for r in results], label="test images")  # fmt: skip
    bars.bar(positions + 0.2, [100 * r["shift_accuracy"]["mean"] for r in results], 0.4, label="shifted 1 px")
    bars.set(title="test accuracy (%)", xticks=positions, ylim=(0, 112))
    bars.set_xticklabels(names, rotation=60)
    bars.legend(loc="upper center", ncols=2)
    consistency.bar(positions, [100 * r["shift_consistency"]["mean"] for r in results], color="tab:green")
    consistency.set(title="prediction unchanged by a 1-px shift (%)", xticks=positions, ylim=(0, 100))
    consistency.set_xticklabels(names, rotation=60)
    colours = [colormaps["tab20"](i % 20) for i in range(len(results))]
    for row, colour in zip(results, colours):
        curve = np.mean([run["accuracy_curve"] for run in row["runs"]], axis=0)
        style = "--" if row["role"] == "head" else "-"
        curves.plot(np.arange(1, len(curve) + 1), 100 * curve, style, marker=".", color=colour, label=row["pooling"])
    epochs = len(results[0]["runs"][0]["accuracy_curve"])
    curves.set(title="test accuracy by epoch (dashed: heads)", xlabel="epoch", ylabel="% (mean over seeds)")
    curves.set_xlim(0.5, epochs + 0.5)
    curves.set_xticks(np.arange(1, epochs + 1, max(1, epochs // 8)))
    curves.legend(fontsize="small", ncols=2)
    figure.savefig(path, dpi=110)
    return path
