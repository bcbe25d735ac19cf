from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from lcopt.lingua2_demo import TrainConfig, train  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
train(Path(sm.output[0]), TrainConfig(seed=sm.params.seed))
