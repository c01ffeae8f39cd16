"""What every command module shares: the one-line user error and the option parsers."""

from __future__ import annotations

import os

import click


class UserError(click.ClickException):
    """A one-line error for the user (no traceback), exit code 2."""

    exit_code = 2


def fail(message: str, code: int = 2):
    err = UserError(message)
    err.exit_code = code
    raise err


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(x) for x in text.split(","))
    except ValueError:
        fail(f"--batch {text!r}: expected comma-separated integers, e.g. 1,8")
    if not batches or min(batches) < 1:
        fail(f"--batch {text!r}: batch sizes must be >= 1")
    return batches


def parse_size(text: str, option: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); a one-line UserError naming the option otherwise."""
    from train.config import ConfigError
    from train.config import parse_size as parse_wh

    try:
        return parse_wh(text)
    except ConfigError as e:
        fail(f"{option} {str(e).removeprefix('size ')}")  # "--size '12x': expected WxH ..."


def mega_config(ref: str):
    """A MegaConfig from a shipped name (configs/<name>.yaml) or a YAML path; one-line error otherwise."""
    from pathlib import Path

    from train.config import CONFIG_DIR, ConfigError, MegaConfig, builtin_config, load_config

    try:
        if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
            return load_config(ref, MegaConfig)
        if not (CONFIG_DIR / f"{ref}.yaml").is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("mega_*.yaml"))
            fail(f"--config {ref!r}: not a shipped config ({', '.join(shipped)}) nor a YAML file")
        return builtin_config(ref, MegaConfig)
    except ConfigError as e:
        fail(str(e))


def parse_range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = (parts[0],) * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        fail(f"--batch {text!r}: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:64")
    return parts


def train_errors():
    """The exceptions that mean bad input or a run that cannot go on: one line, no traceback."""
    from train.assets import AssetError
    from train.checkpoint import CheckpointError
    from train.config import ConfigError
    from train.data.crops import DatasetError
    from train.data.smpl import SmplError
    from train.joints import RegressorError
    from train.loop import TrainingError

    return (
        AssetError,
        CheckpointError,
        ConfigError,
        DatasetError,
        RegressorError,
        SmplError,
        TrainingError,
        FileNotFoundError,
    )


def parse_samples(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = (-1,)
    if any(v < 1 for v in values):
        fail(f"--samples {text!r}: expected comma-separated positive integers, e.g. 1,5,10 (or an empty string)")
    return values


def same_file(a, b) -> bool:
    """Whether two paths name one file: after symlinks (realpath), and hard links too when both exist."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): realpath said all there is
        return False


def refuse_overwriting_inputs(outputs: dict, inputs: dict) -> None:
    """One line and exit 2 when an output would replace an input file or another output.

    `outputs` and `inputs` map what the user calls a path (an option name, e.g. "--results") to the
    path; None entries are skipped. Compared after symlinks and hard links."""
    outs = [(name, str(p)) for name, p in outputs.items() if p]
    ins = [(name, str(p)) for name, p in inputs.items() if p]
    for i, (out_name, out) in enumerate(outs):
        for in_name, inp in ins:
            if same_file(out, inp):
                fail(
                    f"{out_name} {out} is the input {in_name} {inp}: it would be overwritten; choose another {out_name}"
                )
        for other_name, other in outs[i + 1 :]:
            if same_file(out, other):
                fail(f"{out_name} {out} and {other_name} {other} are the same file; give them different names")
