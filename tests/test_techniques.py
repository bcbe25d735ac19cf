"""The technique registry: one module per technique, found without a list; the schema, stacks and rules
read it; a user's own technique module joins a run through the config alone."""

import json
import re
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import run_snakemake

from lcopt import techniques
from lcopt.config import ConfigError, schema, validate
from lcopt.techniques import CacheTechnique, ModelTechnique, PromptTechnique, registry

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "lcopt"


def test_every_module_of_the_package_registers_its_techniques_and_nothing_else_does():
    """Every module and package but the bases (`base`, and `_`-named shared code such as `_eviction`) registers."""
    files = [p for p in (PACKAGE / "techniques").glob("*.py") if not p.stem.startswith("_")]
    packages = (PACKAGE / "techniques").glob("*/__init__.py")  # a technique of several files: kivi/
    modules = {p.stem for p in files} - {"base"} | {p.parent.name for p in packages}
    by_module = {}
    for name, t in registry().items():
        by_module.setdefault(t.__module__.rsplit(".", 1)[-1], []).append(name)
    assert set(by_module) == modules, by_module
    assert by_module["kivi"] == ["kivi4", "kivi2"] and by_module["gptq"] == ["gptq4", "rtn4"]
    assert {"awq4", "quanto4", "fp8kv"} <= set(registry())


def test_sides_and_shared_option_blocks():
    r = registry()
    assert {n for n, t in r.items() if isinstance(t, ModelTechnique)} >= {"prune", "gptq4", "rtn4", "awq4"}
    assert {n for n, t in r.items() if isinstance(t, PromptTechnique)} == {"lingua2"}
    assert {n for n, t in r.items() if isinstance(t, CacheTechnique)} >= {"kivi4", "kivi2", "fp8kv", "quanto4"}
    assert r["gptq4"].options_key == r["rtn4"].options_key == "gptq"
    assert r["kivi4"].options_key == r["kivi2"].options_key == "kivi"
    assert r["fp8kv"].options_schema == {}  # no options, no config block
    for t in r.values():
        assert t.summary, t
    # the fast engine's caches: KIVI and float8 have one; transformers' QuantizedCache runs on `generate`
    from lcopt.engine import has_static_cache

    fast = {n for n, t in r.items() if isinstance(t, CacheTechnique) and has_static_cache(n)}
    assert fast >= {"kivi4", "kivi2", "fp8kv"} and "quanto4" not in fast


def test_schema_enum_and_option_blocks_come_from_the_registry():
    sch = schema()
    assert sch["properties"]["techniques"]["items"]["enum"] == sorted(registry())
    for block in ("prune", "gptq", "lingua2", "kivi", "quantized_cache", "awq"):
        assert sch["properties"][block]["additionalProperties"] is False
    assert sch["properties"]["kivi"]["default"] == {"group_size": 32, "residual_length": 128}
    assert "fp8kv" not in sch["properties"]


@pytest.mark.parametrize("name", ["a+b", "baseline", "none", "full", "has space", ""])
def test_a_name_that_cannot_be_a_stack_part_is_refused(name):
    class Nothing(CacheTechnique):
        def reference_cache(self, model_config, options):
            return None

    with pytest.raises(ValueError, match="technique name"):
        techniques.register(Nothing(name))


def test_two_techniques_sharing_a_block_must_declare_the_same_options(monkeypatch):
    monkeypatch.setattr(techniques, "_REGISTRY", dict(registry()))

    class OtherKivi(CacheTechnique):
        options_schema: ClassVar[dict] = {"properties": {"bits": {"type": "integer"}}}

    with pytest.raises(ValueError, match="share the config block 'kivi'"):
        techniques.register(OtherKivi("kivi3", options_key="kivi"))


@pytest.mark.parametrize(
    ("options_schema", "message"),
    [
        ({"properties": {"times": {"type": "intger"}}}, "not a valid JSON schema at properties/times/type"),
        (["words"], "must be a JSON schema (a mapping), got list"),
        ({"properties": ["times"]}, "not a valid JSON schema at properties"),
        ({"properties": {"times": {"type": "integer", "default": "one"}}}, "default of option 'times'"),
    ],
)
def test_an_options_schema_that_is_not_a_json_schema_is_refused_naming_the_module(monkeypatch, options_schema, message):
    monkeypatch.setattr(techniques, "_REGISTRY", dict(registry()))

    class Broken(CacheTechnique):
        pass

    Broken.options_schema = options_schema
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        techniques.register(Broken("broken"))
    assert str(err.value).startswith(f"technique 'broken' ({__file__})"), str(err.value)
    assert "broken" not in techniques._REGISTRY


def test_no_rule_script_or_module_outside_techniques_names_a_technique():
    names = set(registry()) | {t.options_key for t in registry().values()}
    quoted = re.compile(r"""["']({})["'+]""".format("|".join(map(re.escape, sorted(names)))))
    files = [REPO / "Snakefile", *REPO.glob("rules/*.smk"), *REPO.glob("scripts/*.py"), *PACKAGE.glob("*.py")]
    offenders = [f"{f.relative_to(REPO)}: {m.group(0)}" for f in files for m in quoted.finditer(f.read_text())]
    assert not offenders, offenders


def test_the_readme_lists_exactly_the_registered_techniques():
    """README's technique list (between its markers) is `lcopt.techniques.markdown_list()`."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- techniques: start -->")[1].split("<!-- techniques: end -->")[0]
    assert block.strip() == techniques.markdown_list().strip()


TOY = '''
from lcopt.techniques import PromptTechnique, register


class Shout(PromptTechnique):
    """A toy: upper-cases every context."""

    summary = "upper-cases the context"
    options_schema = {"properties": {"times": {"type": "integer", "minimum": 1, "default": 1}}}

    def compress_rows(self, rows, options, assets):
        return [{**r, "context": r["context"].upper() * options["times"], "compression_ratio": 1.0} for r in rows]


register(Shout("toy_shout"))
'''


def test_a_toy_technique_in_its_own_module_runs_through_a_stack(tmp_path):
    """Added by the config alone (`technique_modules`), it joins the schema, level expansion and the DAG,
    and its rule really runs; no file of lcopt is touched."""
    module = tmp_path / "my_technique.py"
    module.write_text(TOY)
    config = {
        "samples": 2,
        "technique_modules": [str(module)],
        "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 600}},
        "datasets": {"passkey-200": {"synthetic": "passkey", "words": 200}},
        "techniques": ["toy_shout", "kivi4"],
        "levels": [1, 2],
        "toy_shout": {"times": 1},
    }
    code, out = run_snakemake(tmp_path, config, "-n")
    assert code == 0, out[-3000:]
    for stack in ("toy_shout", "kivi4", "toy_shout+kivi4"):
        assert f"results/predictions/demo/{stack}/passkey-200.jsonl" in out, stack
    assert "output: results/compressed/toy_shout/passkey-200.jsonl" in out
    code, out = run_snakemake(tmp_path, config, "results/prompts/demo/toy_shout/passkey-200.jsonl")
    assert code == 0, out[-3000:]
    prompts = [json.loads(x) for x in (tmp_path / "results/prompts/demo/toy_shout/passkey-200.jsonl").open()]
    assert len(prompts) == 2 and all("THE PASS KEY IS" in p["prompt"] for p in prompts)
    # its option block is checked like lcopt's own
    bad = config | {"toy_shout": {"tims": 2}}
    code, out = run_snakemake(tmp_path, bad, "-n")
    assert code != 0 and "key 'toy_shout.tims': unknown key" in out and "allowed keys: times" in out


def test_a_technique_module_that_cannot_load_is_named():
    with pytest.raises(ConfigError, match=r"key 'technique_modules.0': cannot load 'no/such/file.py'"):
        validate(
            {
                "technique_modules": ["no/such/file.py"],
                "models": {"m": {"path": "lcopt-demo", "max_input_tokens": 100}},
                "datasets": {"d": {"synthetic": "passkey", "words": 100}},
            }
        )
