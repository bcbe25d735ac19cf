"""The technique registry: one module per technique in this package, each registering itself.

Every module of `lcopt.techniques` (but `base`; a technique that needs several files is a package,
`kivi/`) is imported on first use and calls `register` with its
technique(s). A user's own technique lives outside lcopt and is loaded with `load_modules` (the config's
`technique_modules`: file paths or dotted module names), before the config is validated, so that its
names join the schema's enum and stack parsing exactly like lcopt's own. The config's
`technique_aliases` (`register_aliases`) register a technique again under a new name with its own
option block (`snapkv10: snapkv` with `snapkv10: {budget: 0.1}`), so that one run can hold the same
technique at two settings.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path

from lcopt.techniques.base import (
    CACHE_ROLES,
    CHECKPOINTS_SCHEMA,
    SIDES,
    CacheTechnique,
    ModelTechnique,
    OptionError,
    PromptTechnique,
    Side,
    Technique,
)

__all__ = [
    "CACHE_ROLES",
    "CHECKPOINTS_SCHEMA",
    "SIDES",
    "CacheTechnique",
    "ModelTechnique",
    "OptionError",
    "PromptTechnique",
    "Side",
    "Technique",
    "get",
    "load_modules",
    "markdown_list",
    "options_blocks",
    "register",
    "register_aliases",
    "registry",
]

BASELINE = "baseline"
# Names that mean "no technique" somewhere in the workflow's paths (the variant, prompt variant and cache).
RESERVED = frozenset({BASELINE, "full", "none"})
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

_REGISTRY: dict[str, Technique] = {}
_discovered = False
_loaded: set[str] = set()


def register(*techniques: Technique) -> None:
    """Add techniques to the registry (a module calls this at import time)."""
    for t in techniques:
        if not NAME.match(t.name) or t.name in RESERVED:
            raise ValueError(
                f"technique name {t.name!r}: must match {NAME.pattern} (no '+', which joins a stack) "
                f"and not be one of {sorted(RESERVED)}"
            )
        if t.side not in SIDES:
            raise ValueError(f"technique {t.name!r}: side {t.side!r} is not one of {', '.join(SIDES)}")
        _check_options_schema(t)
        known = _REGISTRY.get(t.name)
        if known is not None and type(known).__qualname__ != type(t).__qualname__:
            raise ValueError(f"technique {t.name!r} is registered twice ({known!r} and {t!r})")
        for other in _REGISTRY.values():
            same_block = other.options_key == t.options_key and other.name != t.name
            if same_block and other.options_schema != t.options_schema:
                raise ValueError(
                    f"techniques {other.name!r} and {t.name!r} share the config block {t.options_key!r} "
                    "but declare different options"
                )
        _REGISTRY[t.name] = t


def _check_options_schema(t: Technique) -> None:
    """A technique's `options_schema` is a JSON schema (the metaschema's draft, as the config's) whose own
    defaults it accepts, or registering it fails naming its module: a typo such as `type: intger` would
    otherwise surface as a puzzling message about the user's config, or as an AttributeError."""
    import jsonschema

    module = sys.modules.get(type(t).__module__)
    where = f"technique {t.name!r} ({getattr(module, '__file__', None) or type(t).__module__})"
    schema = t.options_schema
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: options_schema must be a JSON schema (a mapping), got {type(schema).__name__}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise ValueError(f"{where}: options_schema is not a valid JSON schema at {at}: {exc.message}") from None
    for error in jsonschema.Draft202012Validator(schema).iter_errors(default_options(t)):
        option = "/".join(map(str, error.absolute_path))
        raise ValueError(f"{where}: the default of option {option!r} breaks its own schema: {error.message}")


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def registry() -> dict[str, Technique]:
    """Every registered technique by name (lcopt's own, then those of loaded user modules)."""
    _discover()
    return dict(_REGISTRY)


def get(name: str) -> Technique:
    techniques = registry()
    try:
        return techniques[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r}; allowed: {', '.join(sorted(techniques))}") from None


def default_options(technique: Technique) -> dict:
    """The options a config that leaves the technique's block out gets: its schema's defaults."""
    properties = copy.deepcopy(technique.options_schema).get("properties", {})
    return {k: v["default"] for k, v in properties.items() if "default" in v}


def options_blocks() -> dict[str, dict]:
    """Config block -> its JSON schema (with the block's default), for every registered technique."""
    blocks: dict[str, dict] = {}
    for t in registry().values():
        if t.options_schema and t.options_key not in blocks:
            schema = copy.deepcopy(t.options_schema)
            blocks[t.options_key] = {"type": "object", "additionalProperties": False, "default": default_options(t)}
            blocks[t.options_key] |= schema
    return blocks


def register_aliases(aliases: dict[str, str]) -> None:
    """Register each `alias: technique` as a copy of the technique under the alias's name, reading its
    options from its own config block (`alias:`), checked against the technique's schema. Registering
    the same alias again is a no-op; an alias may not shadow another technique or alias another alias."""
    for alias, base in aliases.items():
        known = _REGISTRY.get(alias)
        if known is not None and known.alias_of == base:
            continue
        if known is not None:
            raise ValueError(f"technique alias {alias!r}: a technique of that name exists ({known!r})")
        original = get(base)
        if original.alias_of:
            raise ValueError(f"technique alias {alias!r}: {base!r} is itself an alias of {original.alias_of!r}")
        copied = copy.copy(original)
        copied.name, copied.options_key, copied.alias_of = alias, alias, base
        register(copied)


def markdown_list() -> str:
    """The README's technique list: one line per technique, by side, with its module and config block."""
    lines = []
    for side in SIDES:
        for name, t in sorted(registry().items()):
            if t.alias_of:
                continue  # a config's own name for one of these
            if t.side == side and t.__module__.startswith(f"{__name__}."):
                block = f", options `{t.options_key}:`" if t.options_schema else ""
                module = t.__module__.rsplit(".", 1)[-1]
                package = Path(sys.modules[t.__module__].__file__).name == "__init__.py"
                where = f"techniques/{module}/" if package else f"techniques/{module}.py"
                lines.append(f"- **`{name}`** ({side} side, `{where}`{block}): {t.summary}.")
    return "\n".join(lines)


def load_modules(specs: list[str]) -> None:
    """Import user technique modules: a path to a .py file (relative to the working directory) or a
    dotted module name. Each registers its techniques on import; a module already loaded is skipped."""
    _discover()
    for spec in specs:
        path = Path(spec)
        key = str(path.resolve()) if spec.endswith(".py") else spec
        if key in _loaded:
            continue
        if spec.endswith(".py"):
            if not path.is_file():
                raise FileNotFoundError(f"{spec}: no such file")
            name = f"lcopt_user_technique_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
        _loaded.add(key)
