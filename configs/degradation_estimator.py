"""The degradation estimator MoR routes by at CPU scale, trained beforehand and frozen as
MoR's CLIP scorer is (`effcomp.tasks.degradation`): regression to the blur, noise and JPEG
severities Real-ESRGAN's pipeline drew for random crops of the embedded photos, and to the
LR's measured distortion (`degradations.degradation_severity`).

  python experiments/train.py --config=configs/degradation_estimator.py \\
      --workdir=workdirs/degradation_estimator
  # then: configs/onestep_sr.py:method=mor --config.task.mor_estimator=run:<that workdir>

Arguments: steps, patch (HR crop side; the one-step students' 32² patches and the 256²
test crops are read by the same spatial mean / std pooling), batch, seed. Cost: ~3 minutes on
2 CPU cores at the defaults (the Real-ESRGAN pipeline on the host dominates).
"""

from effcomp import config as config_lib
from effcomp.tasks import degradation


def get_config(arg=None):
  a = config_lib.parse_arg(arg, steps=1500, patch=64, batch=32, seed=0)
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "degradation_estimator", "width": 32}
  config.task = degradation.task_defaults()
  config.task.patch_size = a.patch
  config.data.name = "photos"
  config.data.cache_in_memory = True
  config.train.steps = a.steps
  config.train.batch_size = a.batch
  config.eval.batch_size = 3
  config.train.log_every = 100
  config.train.eval_every = max(a.steps // 3, 1)
  config.checkpoint.every_steps = max(a.steps // 3, 1)
  config.optimizer.name = "adamw"
  config.optimizer.lr = 2e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = a.steps // 20
  return config_lib.lock(config)
