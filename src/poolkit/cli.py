"""The ``poolkit`` command: ``check``, ``audit`` and ``demo``.

Thin by design: each subcommand parses its arguments and calls the library
(:func:`poolkit.diagnose`, :func:`poolkit.onnx.audit`, :mod:`poolkit.demo`),
then prints the result with the result's own plain-text renderer, or as JSON.

Exit codes: 0 done; 1 ``--strict`` and a warning or error was found; 2 bad
arguments or an unreadable model (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from .diagnostics import OPS, diagnose
from .errors import PoolkitError

__all__ = ["main"]


class _UsageError(Exception):
    """Bad command-line arguments: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and raise instead of exiting."""

    def error(self, message: str):
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _ints(text: str) -> tuple[int, ...] | int:
    """``"3"`` -> 3, ``"3,2"`` or ``"3x2"`` -> (3, 2)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int or a list of ints like 3,2") from None
    return values[0] if len(values) == 1 else values


def _shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` (or commas) -> (1, 3, 224, 224)."""
    values = _ints(text)
    return values if isinstance(values, tuple) else (values,)


def _padding(text: str):
    """An int, per-axis ints ``1,0``, per-axis ``before:after`` pairs ``0:1,0:1``, or a mode."""
    if text.lower() in ("same", "same_lower", "valid"):
        return text.lower()
    entries = []
    for part in text.split(","):
        try:
            numbers = tuple(int(p) for p in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a padding; use an int (1), one per axis (1,0), before:after pairs (0:1,0:1), "
                "same, same_lower or valid"
            ) from None
        if len(numbers) > 2:
            raise argparse.ArgumentTypeError(f"padding entry {part!r} has more than a before:after pair")
        entries.append(numbers if len(numbers) == 2 else numbers[0])
    return entries[0] if len(entries) == 1 and not isinstance(entries[0], tuple) else tuple(entries)


def _build_parser(with_demo: bool) -> _Parser:
    parser = _Parser(prog="poolkit", description="Pooling layers, exact and explained.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser(
        "check",
        help="diagnose one pooling configuration",
        description="Diagnose one pooling configuration: output shape, coverage, cost and findings.",
    )
    check.add_argument("--input", "-i", required=True, type=_shape, help="input shape, e.g. 1x3x224x224")
    check.add_argument("--op", default="max", choices=OPS, help="pooling operation (default max)")
    check.add_argument("-k", "--kernel-size", type=_ints, help="kernel size: 3 or 3,2")
    check.add_argument("-s", "--stride", type=_ints, help="stride (default: the kernel size)")
    check.add_argument("-p", "--padding", type=_padding, default=0, help="1, 1,0, 0:1,0:1, same, same_lower or valid")
    check.add_argument("-d", "--dilation", type=_ints, default=1, help="dilation (default 1)")
    check.add_argument("--ceil", action="store_true", help="ceil_mode=True")
    check.add_argument(
        "--count-include-pad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="avg: count padding in the divisor (default: yes, as PyTorch)",
    )
    check.add_argument("--channels-last", action="store_true", help="the input shape is N x spatial x C")
    check.add_argument("--dtype", default="float32", help="element type for the byte counts (default float32)")
    check.add_argument("--plot", metavar="PNG", help="also write a coverage heat map (needs matplotlib)")
    _add_output_flags(check)
    check.set_defaults(func=_check)

    audit = sub.add_parser(
        "audit",
        help="diagnose every pooling node of an ONNX model",
        description="Diagnose every pooling node of an ONNX model (needs the onnx package).",
    )
    audit.add_argument("model", help="path to a .onnx file")
    _add_output_flags(audit)
    audit.set_defaults(func=_audit)

    demo = sub.add_parser("demo", help="train a small CNN with poolkit's layers")
    if with_demo:
        module = _import_demo()
        module.add_arguments(demo)
        demo.set_defaults(func=module.run)
    return parser


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any warning or error is found")


def _import_demo():
    try:
        return importlib.import_module(".demo", __package__)
    except ImportError as err:
        raise _UsageError(f"poolkit demo: error: {err}; install the extra with pip install 'poolkit[demo]'") from err


def _finish(result, args: argparse.Namespace) -> int:
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    counts = result.counts
    return 1 if args.strict and (counts["error"] or counts["warning"]) else 0


def _check(args: argparse.Namespace) -> int:
    try:
        report = diagnose(
            args.input,
            args.op,
            args.kernel_size,
            args.stride,
            args.padding,
            args.dilation,
            args.ceil,
            args.count_include_pad,
            args.channels_last,
            dtype=args.dtype,
        )
        if args.plot:
            report.plot(args.plot)
    except PoolkitError as err:
        raise _UsageError(f"poolkit check: error: {err}") from err
    except ImportError as err:
        raise _UsageError(f"poolkit check: error: --plot: {err}") from err
    except OSError as err:
        raise _UsageError(f"poolkit check: error: --plot {args.plot}: {err.strerror or err}") from err
    return _finish(report, args)


def _audit(args: argparse.Namespace) -> int:
    try:
        onnx_module = importlib.import_module(".onnx", __package__)
    except ImportError as err:
        raise _UsageError(
            f"poolkit audit: error: needs the onnx package ({err}); install it with pip install 'poolkit[onnx]'"
        ) from err
    try:
        result = onnx_module.audit(args.model)
    except PoolkitError as err:
        raise _UsageError(f"poolkit audit: error: {err}") from err
    return _finish(result, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``poolkit`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Examples
    --------
    >>> from poolkit.cli import main
    >>> main(["check", "--input", "1x3x8x8", "-k", "2", "--json"]) # doctest: +ELLIPSIS
    {
      "op": "max",
      "input_shape": [
    ...
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = _build_parser(with_demo=bool(argv) and argv[0] == "demo")
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help
            return int(done.code or 0)
        return int(args.func(args))
    except _UsageError as err:
        print(str(err).replace("\n", " "), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader closed the pipe (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
