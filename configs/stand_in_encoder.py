"""A stand-in image encoder for VPD-SR's semantic loss at CPU scale: a small CNN trained to
predict the rotation of crops of the embedded photos (`classification` task with
`rotation_pretext`: Gidaris et al. 2018, self-supervised, no labels needed).

VPD-SR supervises with CLIP's features; CLIP's weights cannot be downloaded here, so
`configs/onestep_sr.py:method=vpdsr` uses this network's features by default and every
table names it a proxy. With CLIP weights in a local Hugging Face folder, pass
`ess_encoder=clip:<folder>` instead.

  python experiments/train.py --config=configs/stand_in_encoder.py \\
      --workdir=workdirs/stand_in_encoder

Arguments: steps, size (crop side), seed. Cost: ~1 minute on 2 CPU cores at the defaults.
"""

from effcomp import config as config_lib
from effcomp.tasks import classification


def get_config(arg=None):
  a = config_lib.parse_arg(arg, steps=600, size=64, seed=0)
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "cnn", "num_classes": 4, "widths": (32, 64, 128), "convs_per_stage": 1}
  config.task = classification.task_defaults()
  config.task.image_size = a.size
  config.task.rotation_pretext = True
  config.data.name = "photos"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = 32
  config.eval.batch_size = 8
  config.train.log_every = 50
  config.train.eval_every = a.steps
  config.checkpoint.every_steps = a.steps
  config.optimizer.name = "adam"
  config.optimizer.lr = 2e-3
  config.optimizer.schedule = "cosine"
  return config_lib.lock(config)
