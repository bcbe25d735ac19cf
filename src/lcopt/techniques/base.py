"""The one base every technique builds on: a name, a side, its config block, what it composes with, and
one hook per side that applies it.

A technique acts on one side of an inference job (`lcopt.stacks`):
- model: it makes a model variant from the variant before it (`ModelTechnique.make_variant`);
- prompt: it rewrites the dataset's rows before the prompts are built (`PromptTechnique.compress_rows`);
- cache: it gives `generate` the KV cache to fill (`CacheTechnique.reference_cache`), or decides which
  tokens that cache keeps (`EvictionTechnique`, `lcopt.techniques._eviction`).

A subclass sets the class attributes, implements its side's hook, and its module calls
`lcopt.techniques.register(...)` with one instance per name (kivi4 and kivi2 are one class at two bit
widths). Nothing outside the technique's own module names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

Side = Literal["model", "prompt", "cache"]
SIDES: tuple[Side, ...] = ("model", "prompt", "cache")  # the order in which they act, and in a stack's name
# The roles of cache-side techniques, in the order they act: an eviction method chooses the tokens a layer
# keeps after the prefill, then a representation stores what is kept (bf16 when the stack has none).
CACHE_ROLES: tuple[str, ...] = ("eviction", "representation")


# A model-side option block's `checkpoints`: model name of the config -> a released checkpoint (hub id or
# local directory) that stands for the technique applied to that model (`lcopt.models.write_technique_variant`).
CHECKPOINTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
    "additionalProperties": {"type": "string"},
}


class OptionError(ValueError):
    """An option value the schema cannot express a rule for; `key` is the option's name in its block."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Technique:
    """A named technique. Subclasses set `side` (through the side classes below) and may override:

    - `options_key`: the top-level config block holding its options (default: its name; gptq4 and rtn4
      share `gptq`, kivi4 and kivi2 share `kivi`);
    - `options_schema`: that block's JSON schema (`properties` with a `default` each where one exists);
      the registry adds it to the config schema, with the block's default made of the properties' ones;
    - `role`: at most one technique of a role in a stack (None: no limit); cache-side techniques are
      `representation` (how the cache stores tokens) or `eviction` (which tokens it keeps), and act in
      the order of `CACHE_ROLES`;
    - `incompatibility(other)`: a reason why it cannot share a stack with `other`, or None;
    - `check_options(options)`: rules across option values, raising `OptionError`.
    """

    side: ClassVar[Side]
    options_schema: ClassVar[dict[str, Any]] = {}
    role: ClassVar[str | None] = None
    summary: str = ""  # one line for the README's technique list

    def __init__(self, name: str, options_key: str | None = None):
        self.name = name
        self.options_key = options_key or name
        self.alias_of: str | None = None  # the technique this one copies under a config's own name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, side={self.side!r}, options_key={self.options_key!r})"

    def incompatibility(self, other: Technique) -> str | None:
        return None

    def check_options(self, options: dict) -> None:
        pass


class ModelTechnique(Technique):
    """Makes a model variant: the parent variant (`variant.json`) in, a `from_pretrained` directory out.

    A released checkpoint (`options["checkpoints"][model]`) replaces `make_variant` for any model-side
    technique whose block has `checkpoints` (`lcopt.models.write_technique_variant`), unless it sets
    `uses_checkpoints` False: `prune_native` shares `prune`'s block and always prunes itself."""

    side: ClassVar[Side] = "model"
    uses_checkpoints: ClassVar[bool] = True
    # The weights end up packed into integers: nothing can act on them afterwards, so it is the last
    # model-side technique of a stack and the only one of its kind (prune+gptq4 is GPTQ of the pruned model).
    packs_weights: ClassVar[bool] = False

    def make_variant(self, parent_json: Path, weights_dir: Path, options: dict, calibration: list[str]) -> dict:
        """Apply the technique to the parent variant, write the model into `weights_dir` (atomically);
        return a JSON record of what was done (stored in the variant's `variant.json`)."""
        raise NotImplementedError

    def random_variant(self, options: dict, checkpoint: str | None) -> dict | None:
        """For a model with `init: random` (a system run): what the variant's weights would be, as a record
        (`int4_group_size`: decoder layers as random 4-bit weights; `weights`: another architecture,
        e.g. a released checkpoint's config); None: the technique needs real weights."""
        return None

    def load(self, weights: str, device: str, dtype: Any, trust_remote_code: bool) -> Any | None:
        """The model in `weights` (a variant this technique made) loaded for `device` by the technique's own
        path, or None: `from_pretrained`, like any hub model (the default)."""
        return None


class PromptTechnique(Technique):
    """Rewrites the rows of a dataset (their `context`), once per dataset for every model.

    A technique may need files the workflow builds first (a demo classifier): `assets(options)` names
    them, `build_asset` makes one into a directory, and `compress_rows` gets their paths."""

    side: ClassVar[Side] = "prompt"

    def assets(self, options: dict) -> list[str]:
        """Names of the workflow-built assets these options need (each a directory name)."""
        return []

    def build_asset(self, name: str, out_dir: Path, seed: int, threads: int) -> None:
        raise NotImplementedError(f"{self.name} builds no asset {name!r}")

    def compress_rows(self, rows: list[dict], options: dict, assets: dict[str, Path]) -> list[dict]:
        """New rows, `context` rewritten; per-row figures in `lcopt.prompts.COMPRESSION_FIELDS` are kept
        with the predictions."""
        raise NotImplementedError


class CacheTechnique(Technique):
    """Chooses how the KV cache of an inference job stores its tokens; at most one per stack (an eviction
    method, `lcopt.techniques._eviction.EvictionTechnique`, may come before it)."""

    side: ClassVar[Side] = "cache"
    role: ClassVar[str | None] = "representation"

    def reference_cache(self, model_config: Any, options: dict) -> Any | None:
        """A fresh `transformers` Cache for one `generate` call (None: transformers' own DynamicCache).
        The reference path: runs anywhere, CPU included."""
        raise NotImplementedError

    def static_cache(self, model_config: Any, options: dict, **engine_args: Any) -> Any | None:
        """The cache of a fast (static-shape) engine, where one implements this technique; None: none yet."""
        return None
