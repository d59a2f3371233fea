"""sora-onnx from Python: ``rewrite``, ``inspect`` and ``validate``, and the CLI.

Options are the command line's flags as keyword arguments (``bits=4`` is
``--bits 4``), turned into arguments and parsed by the same clap definitions, so
defaults and checks are the CLI's. See docs/python.md.
"""

import json
import os
import signal
import sys
import tempfile
import warnings

from . import _native

__all__ = [
    "Error",
    "InvalidModelError",
    "UsageError",
    "ProofError",
    "InternalError",
    "UnprovenWarning",
    "rewrite",
    "inspect",
    "validate",
    "main",
]


class Error(Exception):
    """Every error sora-onnx raises; the message is the CLI's one line."""


class InvalidModelError(Error):
    """Bad input (exit 2): not an ONNX model, a missing file, a model it cannot
    handle, or options the command refuses (``bits=9``)."""


class UsageError(InvalidModelError, ValueError):
    """An option value the command line's parser rejects, e.g. ``bits="x"`` (exit 2)."""


class ProofError(Error):
    """The proof missed ``max_rel_error`` or the outputs do not match (exit 1).

    ``report`` holds the report dict (with its ``validation``) when one was made.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class InternalError(Error):
    """A bug: the library panicked (its message is kept)."""


class UnprovenWarning(UserWarning):
    """A bound was asked but tract could not run the models in time (exit 3)."""


# Flags the wrapper sets itself, or that make no sense without files.
_RESERVED = {"report", "json", "external-data"}


def main():
    """The ``sora-onnx`` console script: the CLI on ``sys.argv``."""
    # Ctrl-C stops the command at once, as it stops the binary.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.main(["sora-onnx"] + sys.argv[1:]))


def _model(model):
    """A path (str) or the bytes of ``model``: a path, bytes or a ModelProto-like."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(
        "model must be a path, bytes or an object with SerializeToString, not "
        + type(model).__name__
    )


def _text(value):
    """One option value as the command line spells it."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _pair(item):
    """``NAME=VALUE`` from a ``(name, value)`` pair or a ready string."""
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return f"{item[0]}={_text(item[1])}"
    return _text(item)


def _arguments(command, options, scratch):
    """The command line of ``options``; ``scratch`` is a folder for .npz files."""
    kinds = dict(_native.options(command))
    args = []
    for name, value in options.items():
        flag = name.replace("_", "-")
        if flag not in kinds or flag in _RESERVED:
            raise TypeError(f"{command}() got an unexpected option '{name}'")
        kind = kinds[flag]
        if value is None or value is False:
            continue
        if kind == "switch":
            if value is not True:
                raise TypeError(f"option '{name}' takes True or False, not {value!r}")
            args.append(f"--{flag}")
            continue
        if isinstance(value, dict) and flag in ("calibration", "eval"):
            value = _npz(value, os.path.join(scratch, f"{flag}.npz"))
        if kind == "repeated":
            items = value.items() if isinstance(value, dict) else value
            if isinstance(value, (str, os.PathLike)):
                items = [value]
            for item in items:
                args += [f"--{flag}", _pair(item)]
        else:
            args += [f"--{flag}", _text(value)]
    return args


def _npz(arrays, path):
    """Saves ``{input name: array}`` to ``path`` (numpy is needed only here)."""
    import numpy

    numpy.savez(path, **{k: numpy.asarray(v) for k, v in arrays.items()})
    return path


def _message(stderr, prefix="error: "):
    """The CLI's lines that start with ``prefix``, without it (else all of stderr)."""
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    if not lines:
        return stderr.strip()
    return "\n".join(line[len(prefix):] for line in lines)


def _run(command, models, options):
    """Runs ``command``; raises for exit 2 and panics; returns the captured run."""
    verbose = bool(options.pop("verbose", False)) if command == "rewrite" else False
    progress = bool(options.pop("progress", False))
    inputs = [_model(m) for m in models]
    with tempfile.TemporaryDirectory() as scratch:
        args = _arguments(command, options, scratch)
        if verbose:
            args.append("--verbose")
        out = _native.run(command, inputs, args, progress)
    if verbose or progress:
        sys.stdout.write(out["stdout"])
        sys.stderr.write(out["stderr"])
    if out["code"] == 2:
        error = UsageError if out["usage"] else InvalidModelError
        raise error(_message(out["stderr"]))
    if out["code"] not in (0, 1, 3):
        raise InternalError(_message(out["stderr"]))
    return out


def rewrite(model, **options):
    """Rewrites ``model`` and proves it; returns ``(model, report)``.

    ``model`` is a path, bytes or an onnx.ModelProto (any object with
    SerializeToString); the rewritten model comes back as bytes, or as a ModelProto
    of the same class when one was given. ``report`` is the CLI's ``--report`` JSON
    as a dict. Options are the flags of ``sora-onnx rewrite``; ``verbose=True``
    prints the CLI's summary and details, ``progress=True`` draws progress bars.
    """
    out = _run("rewrite", [model], options)
    report = json.loads(out["report"]) if out["report"] else None
    if out["model"] is None:
        raise ProofError(_message(out["stderr"]), report)
    if out["side_data"]:
        raise InvalidModelError(
            "the rewritten model needs external data (over 2 GiB): use the CLI"
        )
    if out["code"] == 3:
        warnings.warn(UnprovenWarning(_message(out["stderr"], "warning: ")), stacklevel=2)
    result = out["model"]
    if hasattr(model, "SerializeToString") and hasattr(type(model), "FromString"):
        result = type(model).FromString(result)
    return result, report


def inspect(model, **options):
    """What a rewrite of ``model`` would do, as the dict of ``inspect --json``.

    With ``relations="json"`` the relation graph as a dict, with ``relations="dot"``
    as Graphviz text.
    """
    out = _run("inspect", [model], options)
    if options.get("relations") == "dot":
        return out["stdout"]
    return json.loads(out["stdout"])


def validate(a, b, **options):
    """Runs models ``a`` and ``b`` in tract on the same inputs and compares every
    output; returns the dict of ``validate --json``, whose ``verdict`` says whether
    the bound (``max_rel_error``) held. A failed comparison is not raised."""
    out = _run("validate", [a, b], options)
    return json.loads(out["stdout"])
