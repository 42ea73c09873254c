"""``poolkit demo``: the command end to end, its options, and its data helpers against oracles."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the demo's digits come from scikit-learn")
pytest.importorskip("rich", reason="the demo prints with rich")

from poolkit import demo


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(argv)


def test_poolkit_demo_quick_end_to_end(tmp_path):
    pytest.importorskip("matplotlib", reason="the demo draws its figure with matplotlib")
    out = tmp_path / "out"
    console_script = "import sys, poolkit.cli; sys.exit(poolkit.cli.main())"  # what `poolkit` runs
    done = subprocess.run(
        [sys.executable, "-c", console_script, "demo", "--quick", "--out", out],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "results.json").read_text())
    names = [row["pooling"] for row in report["results"]]
    assert names == [p.name for p in demo.available_poolings()]
    assert {"max", "avg", "l2", "stochastic", "mixed", "gem", "spp", "antialiased"} <= set(names)
    assert report["config"]["epochs"] == 1 and report["config"]["seeds"] == [0]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in names:
        assert name in done.stdout
    assert "wrote" in done.stdout


def test_results_for_chosen_poolings(tmp_path, capsys):
    status = demo.run(parse("--pool", "spp,max", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path)))
    assert status == 0
    report = json.loads((tmp_path / "results.json").read_text())
    by_name = {row["pooling"]: row for row in report["results"]}
    assert list(by_name) == ["max", "spp"]  # the downsampling rows first
    max_row, spp_row = by_name["max"], by_name["spp"]
    assert [run["seed"] for run in max_row["runs"]] == [0, 1]
    accuracies = [run["accuracy"] for run in max_row["runs"]]
    assert max_row["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert max_row["accuracy"]["std"] == pytest.approx(np.std(accuracies))
    assert min(accuracies) > 0.5  # one epoch is enough to beat chance (0.10) by far
    # Only the spatial pyramid network takes other input sizes.
    assert all(value is None for value in max_row["size_accuracy"].values())
    assert all(0 <= value["mean"] <= 1 for value in spp_row["size_accuracy"].values())
    assert spp_row["parameters"] == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 5 * 10 + 10
    assert max_row["parameters"] == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 4 * 10 + 10
    printed = capsys.readouterr().out
    assert "1 epoch x 2 seeds" in printed


def test_same_seed_same_numbers():
    data = demo.load_digits()
    pooling = next(p for p in demo.POOLINGS if p.name == "stochastic")
    first, second = (demo.train_and_measure(pooling, 4, data, 1, lambda: None) for _ in range(2))
    assert first["loss_curve"] == second["loss_curve"]
    assert first["shift_consistency"] == second["shift_consistency"]


def test_unknown_pooling_is_refused(tmp_path, capsys):
    assert demo.run(parse("--pool", "max,median", "--out", str(tmp_path))) == 2
    assert "unknown pooling median; choose from max,avg," in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("value", ["0", "two"])
def test_epochs_must_be_positive_ints(value, capsys):
    with pytest.raises(SystemExit):
        parse("--epochs", value)
    assert "--epochs" in capsys.readouterr().err


def test_digits_split():
    x_train, y_train, x_test, y_test = demo.load_digits()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert y_train.shape == (1347,) and y_train.dtype == np.int64
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() == 1
    assert set(np.unique(y_test)) == set(range(10))


@pytest.mark.parametrize(("rows", "cols"), [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -1)])
def test_shift_matches_roll_with_zero_fill(rows, cols):
    images = np.random.default_rng(0).random((2, 1, 5, 6))
    expected = np.roll(images, (rows, cols), axis=(2, 3))
    if rows > 0:
        expected[:, :, :rows] = 0
    if rows < 0:
        expected[:, :, rows:] = 0
    if cols > 0:
        expected[..., :cols] = 0
    if cols < 0:
        expected[..., cols:] = 0
    np.testing.assert_array_equal(demo.shift(images, rows, cols), expected)


@pytest.mark.parametrize("size", [3, 6, 12, 16])
def test_resize_matches_torch_bilinear(size):
    torch = pytest.importorskip("torch", reason="PyTorch's interpolate is the resize oracle")
    images = np.random.default_rng(0).random((2, 1, 8, 8))
    expected = torch.nn.functional.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear")
    np.testing.assert_allclose(demo.resize(images, size), expected.numpy(), rtol=1e-12, atol=1e-12)
