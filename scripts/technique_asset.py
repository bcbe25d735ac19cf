from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.techniques import get, load_modules, register_aliases  # noqa: E402

sm = snakemake  # noqa: F821
load_modules(sm.params.modules)
register_aliases(dict(sm.params.aliases))
get(sm.wildcards.technique).build_asset(sm.wildcards.asset, Path(sm.output[0]), sm.params.seed, sm.threads)
