import json
from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.demo_model import TrainConfig, train  # noqa: E402
from lcopt.gpus import claim  # noqa: E402
from lcopt.models import DEMO_CHECKPOINT  # noqa: E402

sm = snakemake  # noqa: F821
# Start from the exact config that produced the shipped checkpoint; the config file may override.
fields = json.loads((DEMO_CHECKPOINT / "train_config.json").read_text())
fields |= {"seed": sm.params.seed} | dict(sm.params.overrides)
cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
with claim(sm.resources.gpu):
    train(Path(sm.output[0]), cfg)
