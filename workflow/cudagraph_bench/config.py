"""The study config: read, merged and checked once, for the Snakefile and the command line alike.

Errors name the file and line (YAML syntax) or the key path, the bad value and what is allowed
(schema), one line each, never a dump of the schema or of the config.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

from .cells import ConfigError, check_config

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"  # package data
_MAX_VALUE = 60  # characters of a bad value shown in a message


def _fill_defaults(validator, properties, instance, schema):
    """The "properties" keyword that also writes each absent property's default into the instance
    (the jsonschema FAQ's way to fill defaults in the one validation pass)."""
    if isinstance(instance, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict) and "default" in sub and name not in instance:
                instance[name] = copy.deepcopy(sub["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_FillingValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": _fill_defaults})


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    """Validates and, as it goes, fills in the schema's defaults."""
    return _FillingValidator(yaml.safe_load(SCHEMA_PATH.read_text()))


def read_yaml(path: str | Path) -> dict:
    """One config file as a dict. ConfigError names the file (and line and column for bad YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        raise ConfigError(f"{where}: not valid YAML: {what}" + (f" ({context})" if context else "")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold keys at the top level, found a {type(data).__name__}")
    return data


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _describe(e: jsonschema.ValidationError) -> str:
    if e.context:  # oneOf / anyOf: the alternative that came closest says it best
        return _describe(jsonschema.exceptions.best_match(e.context))
    where = _key_path(e.absolute_path)
    v, allowed = e.validator, e.validator_value
    if v == "additionalProperties" and isinstance(e.instance, dict):
        known = set(e.schema.get("properties", {}))
        extra = sorted(k for k in e.instance if k not in known)
        keys = ", ".join(sorted(known)) or "none"
        prefix = "" if where == "(top level)" else where + "."
        return "; ".join(f"{prefix}{k}: unknown key (allowed: {keys})" for k in extra)
    if v == "required":
        missing = [k for k in allowed if isinstance(e.instance, dict) and k not in e.instance]
        return f"{where}: missing key {', '.join(missing) or e.message}"
    if v == "enum":
        return f"{where}: {_short(e.instance)} is not allowed (allowed: {', '.join(map(str, allowed))})"
    if v == "const":
        return f"{where}: {_short(e.instance)} is not allowed (allowed: {allowed!r})"
    if v == "type":
        want = allowed if isinstance(allowed, str) else " or ".join(allowed)
        return f"{where}: {_short(e.instance)} is not a {want}"
    if v == "pattern":
        desc = e.schema.get("description")
        return f"{where}: {_short(e.instance)} does not match {allowed}" + (f" ({desc})" if desc else "")
    return f"{where}: {e.message if len(e.message) <= 2 * _MAX_VALUE else _short(e.instance) + ' is not allowed'}"


def schema_errors(config: dict) -> list[str]:
    """One line per place the config breaks the schema, in key order; fills in the schema's
    defaults where the config leaves a key out."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


def validate(config: dict) -> dict:
    """Check the merged config against the schema (filling in its defaults) and its cross-references.
    Raises ConfigError with one line per problem."""
    errors = schema_errors(config)  # one pass: the errors, and the defaults filled in
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    check_config(config)
    return config


def load(paths: list[str | Path]) -> dict:
    """Read config files (later ones laid over earlier ones, as --configfiles does) and validate."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, read_yaml(path))
    return validate(config)
