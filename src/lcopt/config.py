"""Config loading and validation: a bad key, type or value stops the run before any job, with a
message that names the file, the key and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jsonschema
import yaml

from lcopt import techniques
from lcopt.stacks import StackError, expand_levels, parse_stack
from lcopt.tasks import get_task

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
SCHEMA_KEYS = frozenset(yaml.safe_load(SCHEMA_PATH.read_text())["properties"])


class ConfigError(ValueError):
    pass


# JSON Schema counts 4.0 as an integer; Python does not (`range(4.0)` fails, deep in a job). A key the schema
# types `integer` takes only a YAML integer: `samples: 4.0` stops the run here, naming the key.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def schema() -> dict:
    """The config schema: the base file plus, from the technique registry, the technique names and each
    technique's option block."""
    sch = yaml.safe_load(SCHEMA_PATH.read_text())
    sch["properties"]["techniques"]["items"]["enum"] = sorted(techniques.registry())
    for key, block in techniques.options_blocks().items():
        if key in sch["properties"]:
            raise ConfigError(f"technique option block {key!r} clashes with lcopt's own config key {key!r}")
        sch["properties"][key] = block
    return sch


def load_technique_modules(config: dict, source: str = "config") -> None:
    """The config's own technique modules (`technique_modules`), registered before anything is checked."""
    specs = config.get("technique_modules", [])
    if not isinstance(specs, list) or not all(isinstance(x, str) for x in specs):
        raise ConfigError(f"{source}: key 'technique_modules': expected a list of module paths or names")
    for i, spec in enumerate(specs):
        try:
            techniques.load_modules([spec])
        except Exception as exc:
            raise ConfigError(
                f"{source}: key 'technique_modules.{i}': cannot load {spec!r} ({type(exc).__name__}: {exc}); "
                "give a .py file (relative to the working directory) or an importable module name"
            ) from exc


def register_technique_aliases(config: dict, source: str = "config") -> None:
    """The config's `technique_aliases` (new name -> technique), registered before the schema is built,
    so each alias gets the technique's option block under its own name."""
    aliases = config.get("technique_aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigError(f"{source}: key 'technique_aliases': expected a mapping of new name -> technique name")
    known = techniques.registry()
    for alias, base in aliases.items():
        where = f"{source}: key 'technique_aliases.{alias}'"
        if base not in known or known[base].alias_of:
            allowed = ", ".join(sorted(n for n, t in known.items() if not t.alias_of))
            raise ConfigError(f"{where}: {base!r} is not a technique; allowed: {allowed}")
        if alias in SCHEMA_KEYS:
            raise ConfigError(f"{where}: {alias!r} is a key of lcopt's own config; choose another name")
        try:
            techniques.register_aliases({alias: base})
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _key(path: Sequence) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _allowed(error: jsonschema.ValidationError) -> str:
    s = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(s.get("properties", {}))
        return f"allowed keys: {', '.join(allowed)}" if allowed else ""
    if "enum" in s:
        return "allowed: " + ", ".join(map(str, s["enum"]))
    if "anyOf" in s and s.get("description"):
        return f"expected {s['description']}"
    if "type" in s:
        bounds = [f"{k} {s[k]}" for k in ("minimum", "maximum", "pattern") if k in s]
        return f"expected {s['type']}" + (f" ({', '.join(bounds)})" if bounds else "")
    return ""


def _format(error: jsonschema.ValidationError, source: str) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = [*path, extra[0]] if extra else path
        message = f"unknown key {extra[0]!r}" if extra else error.message
    elif error.validator == "propertyNames":
        message = f"invalid name {error.instance!r}"
    else:
        message = error.message
    allowed = _allowed(error)
    return f"{source}: key '{_key(path)}': {message}" + (f"; {allowed}" if allowed else "")


def _set_defaults(node, sch: dict) -> None:
    if not isinstance(node, dict):
        return
    for key, sub in sch.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = yaml.safe_load(yaml.safe_dump(sub["default"]))
        if key in node:
            _set_defaults(node[key], sub)
    extra = sch.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in sch.get("properties", {}):
                _set_defaults(value, extra)


def validate(config: dict, source: str = "config") -> dict:
    """Check `config` against the schema and the cross-field rules; fill defaults; return it."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(config).__name__}")
    load_technique_modules(config, source)
    register_technique_aliases(config, source)
    sch = schema()
    errors = sorted(_Validator(sch).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_format(e, source) for e in errors))
    _set_defaults(config, sch)
    for name, model in config["models"].items():
        if ("path" in model) == ("gguf" in model):
            raise ConfigError(f"{source}: key 'models.{name}': give exactly one of 'path' or 'gguf'")
    for name, ds in config["datasets"].items():
        kinds = [k for k in ("longbench", "synthetic") if k in ds]
        if len(kinds) != 1:
            raise ConfigError(f"{source}: key 'datasets.{name}': give exactly one of 'longbench' or 'synthetic'")
        if "synthetic" in ds and "words" not in ds:
            raise ConfigError(f"{source}: key 'datasets.{name}.words': required for a synthetic dataset")
        if "longbench" in ds and "words" in ds:
            raise ConfigError(f"{source}: key 'datasets.{name}.words': only synthetic datasets take a length")
        get_task(ds.get("longbench") or ds["synthetic"])
    for name, ds in config["calibration_datasets"].items():
        where = f"{source}: key 'calibration_datasets.{name}"
        if name in config["datasets"]:
            raise ConfigError(f"{where}': also a dataset of `datasets`; a calibration dataset is never scored")
        if ("longbench" in ds) == ("synthetic" in ds):
            raise ConfigError(f"{where}': give exactly one of 'longbench' or 'synthetic'")
        if ("synthetic" in ds) != ("words" in ds):
            raise ConfigError(f"{where}.words': required for a synthetic dataset, and only for one")
    every_dataset = [*config["datasets"].values(), *config["calibration_datasets"].values()]
    if any("longbench" in ds for ds in every_dataset):
        lb = config["longbench"]
        if lb["source"] == "local" and not lb.get("local_dir"):
            raise ConfigError(f"{source}: key 'longbench.local_dir': required when longbench.source is local")
    if config["longbench"]["local_variants"] and config["longbench"]["source"] != "local":
        raise ConfigError(
            f"{source}: key 'longbench.local_variants': applies to longbench.source local only (a hub file "
            "must be the official one)"
        )
    _check_technique_options(config, source)
    _check_trust_remote_code(config, source)
    if config.get("techniques"):
        expanded = expand_levels(config["techniques"], config["levels"])
        config["stacks"] = list(dict.fromkeys([*config["stacks"], *expanded]))
    for i, stack in enumerate(config["stacks"]):
        try:
            parse_stack(stack)
        except StackError as exc:
            raise ConfigError(f"{source}: key 'stacks.{i}': {exc}") from None
    return config


def _check_technique_options(config: dict, source: str) -> None:
    """Each technique's option block: datasets and models it names exist, and its own cross-value rules."""
    checked = set()
    for technique in techniques.registry().values():
        block = technique.options_key
        if block not in config:
            continue
        options = config[block]
        if block not in checked:
            checked.add(block)
            calib = options.get("calibration_dataset")
            allowed = [*config["datasets"], *config["calibration_datasets"]]
            if calib is not None and calib not in allowed:
                raise ConfigError(
                    f"{source}: key '{block}.calibration_dataset': {calib!r} is not a dataset of this config "
                    f"(datasets or calibration_datasets); allowed: {', '.join(allowed)}"
                )
            for name in options.get("checkpoints", {}):
                if name not in config["models"]:
                    raise ConfigError(
                        f"{source}: key '{block}.checkpoints.{name}': not a model of this config; "
                        f"allowed: {', '.join(config['models'])}"
                    )
        try:
            technique.check_options(options)
        except techniques.OptionError as exc:
            raise ConfigError(f"{source}: key '{block}.{exc.key}': {exc}") from None


def model_sources(config: dict) -> dict[str, str]:
    """Config key -> every model path and released checkpoint the config names (as written)."""
    found = {f"models.{name}.path": m["path"] for name, m in config["models"].items() if "path" in m}
    for technique in techniques.registry().values():
        for model, checkpoint in config.get(technique.options_key, {}).get("checkpoints", {}).items():
            found[f"{technique.options_key}.checkpoints.{model}"] = checkpoint
    return found


def _check_trust_remote_code(config: dict, source: str) -> None:
    """Each `trust_remote_code` entry is a model path or checkpoint of this config (a typo must not
    silently trust nothing, nor something else)."""
    named = set(model_sources(config).values())
    for i, entry in enumerate(config["trust_remote_code"]):
        if entry not in named:
            raise ConfigError(
                f"{source}: key 'trust_remote_code.{i}': {entry!r} is not a model path or checkpoint of this "
                f"config; allowed: {', '.join(sorted(named))}"
            )


def technique_options(config: dict, technique: str) -> dict:
    """The (validated) option block of a technique; {} for one without options."""
    return dict(config.get(techniques.get(technique).options_key, {}))


def check_sources(config: dict, source: str = "config") -> None:
    """Local inputs the config names exist and look usable (LongBench files, model directories), so a
    wrong path stops the run before any job. Hub ids are left to the jobs that download them."""
    from lcopt.models import ModelError, resolve_source

    lb = config["longbench"]
    for block in ("datasets", "calibration_datasets"):
        for name, ds in config[block].items():
            if "longbench" in ds and lb["source"] == "local":
                path = Path(lb["local_dir"]) / f"{ds['longbench']}.jsonl"
                if not path.is_file():
                    raise ConfigError(
                        f"{source}: key '{block}.{name}': {path} not found "
                        "(longbench.local_dir must hold the task's <task>.jsonl)"
                    )
    for name, model in config["models"].items():
        if "path" in model:
            try:
                resolve_source(model["path"], weights=model["init"] != "random")
            except ModelError as exc:
                raise ConfigError(f"{source}: key 'models.{name}.path': {exc}") from None
    check_remote_code(config, source)


def check_remote_code(config: dict, source: str = "config") -> None:
    """No model or checkpoint runs its repository's own code (config.json `auto_map`, or an architecture
    transformers does not have) unless `trust_remote_code` lists it: stop before any job, naming the
    key. A hub id's config.json is read through the hub's cache (downloaded once when online); offline
    and not cached, the job that loads it checks again."""
    from lcopt.models import custom_code

    for key, path in model_sources(config).items():
        reason = None if path in config["trust_remote_code"] else custom_code(path)
        if reason:
            raise ConfigError(
                f"{source}: key '{key}': {path} {reason}. Running it means running that code: add {path!r} "
                "to trust_remote_code to allow it"
            )


def read_file(path: str | Path) -> dict:
    """One config file's keys, or an error that names the file: not readable, not text (UTF-8), not YAML
    (with where the parser stopped), or not a mapping of keys.

    Snakemake reads a `--configfile` itself, before the workflow starts, and its errors name no file (a
    binary one gives a traceback): `python -m lcopt.config FILE...` checks a config the way the workflow
    will, with this reader's messages."""
    try:
        Path(path).read_bytes().decode("utf-8")
        with open(path, encoding="utf-8") as f:  # a named stream: the parser's messages give the file's name
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a config file: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: cannot read config: not YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, got a {type(data).__name__}")
    return data


def load(paths: Sequence[str | Path]) -> dict:
    """Merge YAML files (later ones override top-level keys, as snakemake does) and validate."""
    config: dict = {}
    for path in paths:
        config.update(read_file(path))
    return validate(config, ", ".join(map(str, paths)))


def _type(node: dict) -> str:
    """A schema node's type in words: the type (or types), its allowed values and bounds."""
    if "anyOf" in node and "type" not in node:  # e.g. an eviction budget: a count, or a share of the prompt
        return " or ".join(_type(alternative) for alternative in node["anyOf"])
    kinds = node.get("type", "any")
    text = " or ".join(kinds) if isinstance(kinds, list) else kinds
    if text == "array":
        text = f"list of {_type(node.get('items', {}))}"
    if "enum" in node:
        text += " (one of " + ", ".join(map(str, node["enum"])) + ")"
    words = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    bounds = [f"{word} {node[key]}" for key, word in words.items() if key in node]
    return text + (f", {', '.join(bounds)}" if bounds else "")


def _flow(value) -> str:
    """A value as one line of YAML, cut at 60 characters."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(config: dict, path: list[str]):
    """The value at `path` in a config, where `<name>` matches any key (the first); KeyError if none."""
    node = config
    for part in path:
        if not isinstance(node, dict) or not node:
            raise KeyError(part)
        node = next(iter(node.values())) if part == "<name>" else node[part]
    return node


README_MARKERS = ("<!-- config keys: start -->\n", "<!-- config keys: end -->")


def reference(config_dir: Path) -> str:
    """config/README.md's table of every config key (the schema, with each registered technique's block):
    its type, default, an example (the first of `config_dir`'s configs that sets it: config.yaml,
    paper.yaml, then the others by name; else the schema's `examples`) and its description."""
    first = [config_dir / "config.yaml", config_dir / "paper.yaml"]
    files = [*first, *sorted(set(config_dir.glob("*.yaml")) - set(first))]
    examples = {f.name: yaml.safe_load(f.read_text()) for f in files if f.is_file()}
    rows = ["| key | type | default | example | description |", "|---|---|---|---|---|"]

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    def example(path: list[str], node: dict) -> str:
        for name, config in examples.items():
            try:
                return f"`{_flow(_lookup(config, path))}` ({name})"
            except KeyError:
                continue
        return f"`{_flow(node['examples'][0])}`" if node.get("examples") else "—"

    def walk(node: dict, path: list[str]) -> None:
        required = set(node.get("required", []))
        for key, sub in node.get("properties", {}).items():
            here = [*path, key]
            default = f"`{_flow(sub['default'])}`" if "default" in sub else "required" if key in required else "—"
            description = cell(sub.get("description", ""))
            cells = [f"`{'.'.join(here)}`", cell(_type(sub)), default, example(here, sub), description]
            rows.append(f"| {' | '.join(cells)} |")
            walk(sub, here)
            if isinstance(sub.get("additionalProperties"), dict):
                walk(sub["additionalProperties"], [*here, "<name>"])

    walk(schema(), [])
    return "\n".join(rows)


def write_reference(config_dir: Path) -> None:
    """Put `reference(config_dir)` into `config_dir`/README.md, between its markers (a test checks it)."""
    readme = config_dir / "README.md"
    head, rest = readme.read_text().split(README_MARKERS[0])
    tail = rest.split(README_MARKERS[1])[1]
    readme.write_text(f"{head}{README_MARKERS[0]}{reference(config_dir)}\n{README_MARKERS[1]}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lcopt.config FILE...`: check config files as `snakemake --configfile FILE...` uses them
    (merged, they alone define the run), with messages naming the file and the key."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m lcopt.config", description=main.__doc__)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--readme", type=Path, metavar="DIR", help="rewrite DIR/README.md's table of every key")
    args = parser.parse_args(argv)
    if args.readme:
        write_reference(args.readme)
        return 0
    if not args.files:
        parser.error("give config files to check (or --readme DIR)")
    try:
        config = load(args.files)
        check_sources(config, ", ".join(map(str, args.files)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {len(config['models'])} models x {len(config['stacks'])} stacks x {len(config['datasets'])} datasets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
