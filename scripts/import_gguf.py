from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.models import import_gguf  # noqa: E402

sm = snakemake  # noqa: F821
import_gguf(sm.params.gguf["package"], sm.params.gguf["file"], Path(sm.output[0]))
