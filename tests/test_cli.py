"""The poolkit command: output, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import poolkit as pk
from poolkit.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, start):
    assert err.startswith(start), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_check_prints_the_report(capsys):
    code, out, err = run(capsys, "check", "--input", "1x3x112x112", "--op", "max", "-k", "3", "-s", "2")
    assert (code, err) == (0, "")
    assert out == str(pk.diagnose((1, 3, 112, 112), "max", 3, 2)) + "\n"
    assert "warning dropped-tail [rows]: input rows 111 of 0..111 are never read (0.9% of the input)" in out


def test_check_json_is_json_only(capsys):
    argv = ["check", "-i", "1,3,28,28", "--op", "avg", "-k", "3", "-s", "2", "-p", "1", "--ceil", "--json"]
    code, out, _ = run(capsys, *argv, "--no-count-include-pad")
    assert code == 0
    data = json.loads(out)
    assert data == pk.diagnose((1, 3, 28, 28), "avg", 3, 2, 1, ceil_mode=True, count_include_pad=False).to_dict()
    assert data["params"]["count_include_pad"] is False and data["output_shape"] == [1, 3, 15, 15]
    _, out, _ = run(capsys, *argv)
    assert json.loads(out)["params"]["count_include_pad"] is True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-p", "same", "-k", "2"], ((0, 1),)),
        (["-p", "0:1", "-k", "3", "-s", "2"], ((0, 1),)),
        (["-p", "1", "-k", "3", "-d", "2"], ((1, 1),)),
        (["-p", "valid", "-k", "3"], ((0, 0),)),
    ],
)
def test_check_padding_forms(capsys, argv, expected):
    code, out, _ = run(capsys, "check", "--input", "1x1x9", *argv, "--json")
    assert code == 0
    assert tuple(tuple(p) for p in json.loads(out)["params"]["padding"]) == expected


def test_check_per_axis_arguments_and_channels_last(capsys):
    code, out, _ = run(capsys, "check", "-i", "2x10x12x3", "-k", "3,2", "-s", "3x2", "-p", "1,0", "--channels-last",
                       "--json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["output_shape"] == [2, 4, 6, 3]
    assert data["params"]["padding"] == [[1, 1], [0, 0]]


def test_strict_exit_codes(capsys):
    assert run(capsys, "check", "-i", "1x3x112x112", "-k", "3", "-s", "2", "--strict")[0] == 1
    assert run(capsys, "check", "-i", "1x3x112x112", "-k", "2", "--strict")[0] == 0  # only info (aliasing)
    assert run(capsys, "check", "-i", "1x3x112x112", "-k", "3", "-s", "2")[0] == 0


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["check", "-k", "3"], "poolkit check: error: the following arguments are required: --input/-i"),
        (["check", "-i", "1xax3", "-k", "3"], "poolkit check: error: argument --input/-i: '1xax3' is not an int"),
        (["check", "-i", "1x1x8", "-k", "3", "--op", "mean"], "poolkit check: error: argument --op: invalid choice"),
        (
            ["check", "-i", "1x1x8", "-k", "3", "-p", "1:2:3"],
            "poolkit check: error: argument -p/--padding: padding entry",
        ),
        (["check", "-i", "1x1x8", "-k", "3", "-p", "2"], "poolkit check: error: padding=2 puts 2 cells on one side"),
        (["check", "-i", "1x1x8"], "poolkit check: error: op='max' needs kernel_size"),
        (["check", "-i", "1x8", "-k", "2"], "poolkit check: error: input_shape=(1, 8) needs a batch, a channel"),
        (["check", "-i", "1x1x8", "-k", "2", "--dtype", "nope"], "poolkit check: error: dtype='nope' is not"),
        (["frobnicate"], "poolkit: error: argument command: invalid choice: 'frobnicate'"),
        ([], "poolkit: error: the following arguments are required: command"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, start):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert_one_line_error(err, start)


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0 and "--count-include-pad, --no-count-include-pad" in out


def test_check_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "cov.png"
    assert run(capsys, "check", "-i", "1x1x9x9", "-k", "2", "--plot", str(path))[0] == 0
    assert path.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run(capsys, "check", "-i", "1x1x9x9", "-k", "2", "--plot", str(tmp_path / "no" / "dir.png"))
    assert code == 2
    assert_one_line_error(err, f"poolkit check: error: --plot {tmp_path / 'no' / 'dir.png'}:")


def test_check_plot_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    code, _, err = run(capsys, "check", "-i", "1x1x9x9", "-k", "2", "--plot", str(tmp_path / "c.png"))
    assert code == 2
    assert_one_line_error(err, "poolkit check: error: --plot: Report.plot needs matplotlib")


def test_audit(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    alexnet = os.path.join(light, "light_bvlc_alexnet.onnx")
    code, out, err = run(capsys, "audit", alexnet)
    assert (code, err) == (0, "")
    assert "n3    MaxPool  1x96x54x54 -> 1x96x26x26    warning dropped-tail[0]" in out
    assert run(capsys, "audit", alexnet, "--strict")[0] == 1  # AlexNet drops rows: 4 warnings
    assert run(capsys, "audit", os.path.join(light, "light_vgg19.onnx"), "--strict")[0] == 0  # info only
    code, out, _ = run(capsys, "audit", alexnet, "--json")
    data = json.loads(out)
    assert data["counts"] == {"error": 0, "warning": 4, "info": 7}
    assert [n["name"] for n in data["nodes"]] == ["n3", "n7", "n14"]
    missing = tmp_path / "missing.onnx"
    code, _, err = run(capsys, "audit", str(missing))
    assert code == 2
    assert_one_line_error(err, f"poolkit audit: error: {missing}: no such file")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    code, _, err = run(capsys, "audit", str(notes))
    assert code == 2
    assert_one_line_error(err, f"poolkit audit: error: {notes}: not a readable ONNX model")


def test_audit_without_onnx(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "poolkit.onnx", None)
    code, _, err = run(capsys, "audit", "model.onnx")
    assert code == 2
    assert_one_line_error(err, "poolkit audit: error: needs the onnx package")
    assert "pip install 'poolkit[onnx]'" in err


def test_demo_subcommand_wiring(capsys, monkeypatch):
    code, out, _ = run(capsys, "demo", "--help")
    assert code == 0 and out.startswith("usage: poolkit demo")
    monkeypatch.setitem(sys.modules, "poolkit.demo", None)
    code, _, err = run(capsys, "demo")
    assert code == 2
    assert_one_line_error(err, "poolkit demo: error: ")
    assert "pip install 'poolkit[demo]'" in err


def test_check_loads_no_heavy_modules():
    code = (
        "import sys; from poolkit.cli import main; "
        "assert main(['check', '-i', '1x3x64x64', '-k', '3', '--json']) == 0; "
        "heavy = [m for m in ('numba', 'onnx', 'torch', 'matplotlib', 'rich') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_console_script():
    script = shutil.which("poolkit") or pytest.skip("the poolkit script is not installed in this environment")
    done = subprocess.run([script, "check", "-i", "1x1x8", "-k", "3", "-p", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done.stderr, "poolkit check: error: padding=2 puts 2 cells")
    done = subprocess.run([script, "check", "-i", "1x1x8", "-k", "3", "-s", "2", "--strict"], capture_output=True)
    assert done.returncode == 1


def test_closed_pipe_is_quiet():
    script = shutil.which("poolkit") or pytest.skip("the poolkit script is not installed in this environment")
    # the JSON of a 200000-cell axis (every read count) is far more than a pipe buffer holds
    argv = [script, "check", "-i", "1x1x200000", "-k", "2", "--json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout.readline() == b"{\n"
        process.stdout.close()
        assert process.stderr.read() == b""
        assert process.wait() == 1
