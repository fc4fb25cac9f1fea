"""``gan-ext train MODEL --config FILE``: a run described in a JSON or YAML
file, whose values the command line overrides.

The file is a mapping of :class:`TrainOptions` field names (``batch_size`` or
``batch-size``) to values, or a run folder's own ``config.json`` (its
``"options"`` are read, the rest is ignored). Precedence: the command line,
then the file, then the model's defaults. A key counts as given by the user
(``fit``'s ``explicit``: refused where it does not apply to the model, checked
on ``--resume``) unless its value is the TrainOptions default, so a
``config.json``, which stores every option, can be fed back as it is.

Where a run is written is the command line's business: a run's saved
``config.json`` has its ``out``, ``resume`` and ``overwrite`` ignored (the new
run goes to ``--out``, or ``runs/MODEL``, as without the file); a user's file
may set ``out`` (a recipe with its own folder) but not ``resume`` or
``overwrite``, which act on an existing run and belong on the command line."""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Dict, Optional

from .options import GAN_MODELS, TrainOptions

__all__ = ["read_config", "config_options", "merge_config", "ConfigError"]

# Fields a run's saved config.json describes but must not apply to a new run.
SAVED_IGNORED = ("out", "resume", "overwrite")
# Fields a user's file may not set (they act on an existing run folder).
ACTIONS = ("resume", "overwrite")
# Command-line options that are not options of a run.
_LAUNCH = {"nproc_per_node": "--nproc-per-node", "config": "--config"}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainOptions)}
_DEFAULTS = {name: f.default for name, f in _FIELDS.items()
             if f.default is not dataclasses.MISSING}


class ConfigError(ValueError):
    """A config file that cannot be used: one line naming ``--config``."""


def _load_yaml(text: str, path: str):
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"--config {path}: reading YAML needs PyYAML: pip install pyyaml, or "
                          "write the file as JSON (.json)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--config {path}: invalid YAML{where}: {problem}") from None


def read_config(path: str) -> dict:
    """The file's top-level mapping; ConfigError for a missing, unreadable,
    unparsable or non-mapping file, or one of another extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"--config {path}: expected a .json, .yaml or .yml file")
    if not os.path.exists(path):
        raise ConfigError(f"--config {path}: no such file")
    if os.path.isdir(path):
        raise ConfigError(f"--config {path}: is a folder, not a file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"--config {path}: cannot read it ({why})") from None
    if ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path}: invalid JSON at line {e.lineno}, column "
                              f"{e.colno}: {e.msg}") from None
    else:
        data = _load_yaml(text, path)
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"--config {path}: expected a mapping of option names to values at "
                          f"the top level, got {kind}")
    return data


def _check_type(name: str, value, yaml_file: bool):
    """``value`` as the field's type (from its annotation), or TypeError."""
    kind = str(_FIELDS[name].type)
    if value is None:
        if kind.startswith("Optional"):
            return None
        raise TypeError(f"must not be null (the default is {_DEFAULTS.get(name)!r})")
    if "bool" in kind:
        ok = isinstance(value, bool)
    elif "int" in kind:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif "float" in kind:
        if yaml_file and isinstance(value, str):   # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        want = kind.replace("Optional[", "").rstrip("]")
        raise TypeError(f"expected {'a whole number' if want == 'int' else want}, "
                        f"got {value!r}")
    return value


def config_options(data: dict, path: str, model: str) -> Dict[str, object]:
    """The file's options as {field: value} (type-checked, every key valid),
    including values equal to the defaults; ConfigError naming the key."""
    saved = isinstance(data.get("options"), dict)
    if saved:   # a run folder's config.json
        data = {k: v for k, v in data["options"].items() if k not in SAVED_IGNORED}
        # Runs saved before --loss wgan-gp stored k's old default, 1, for every model
        # (now None: 1, or 5 with wgan-gp); a model without k never used it.
        if data.get("k") == 1 and model not in GAN_MODELS:
            del data["k"]
    yaml_file = os.path.splitext(path)[1].lower() != ".json"
    out: Dict[str, object] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in _LAUNCH:
            raise ConfigError(f"--config {path}: {key!r} is not an option of a run: give "
                              f"{_LAUNCH[name]} on the command line")
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, list(_FIELDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--config {path}: unknown option {key!r}{hint}")
        if name in out:
            raise ConfigError(f"--config {path}: {name!r} is given twice ({name!r} and "
                              f"{name.replace('_', '-')!r} are the same option)")
        try:
            out[name] = _check_type(name, value, yaml_file)
        except TypeError as e:
            raise ConfigError(f"--config {path}: {key}: {e}") from None
        if name in ACTIONS and out[name] != _DEFAULTS[name]:
            raise ConfigError(f"--config {path}: {key}: give --{name} on the command line (it "
                              "acts on the run already in --out; a file describes a run)")
    if "model" in out and out["model"] != model:
        raise ConfigError(f"--config {path}: describes a {out['model']} run, but the command "
                          f"trains {model}: make them agree")
    out.pop("model", None)
    _validate(out, path, model)
    return out


def _validate(options: dict, path: str, model: str) -> None:
    """The file's values through TrainOptions itself (its usual one-line
    errors), naming the key when one alone is at fault."""
    try:
        TrainOptions(model=model, **options)
        return
    except (TypeError, ValueError) as e:
        whole = e
    for name, value in options.items():
        try:
            TrainOptions(model=model, **{name: value})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--config {path}: {name}: {e}") from None
    raise ConfigError(f"--config {path}: {whole}") from None


def merge_config(path: Optional[str], model: str, given: dict) -> dict:
    """The options of the run: the file's, then ``given`` (the command line's
    explicit values) over them. The result's keys are the explicit names:
    the command line's, and the file's whose value is not the default."""
    if path is None:
        return dict(given)
    options = config_options(read_config(path), path, model)
    merged = {k: v for k, v in options.items() if v != _DEFAULTS.get(k, object())}
    merged.update(given)
    return merged
