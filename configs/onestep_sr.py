"""One-step diffusion SR distilled from a trained `diffusion_sr` teacher (×4).

`effcomp/tasks/onestep_sr.py`: the student is the teacher's network started from its
weights and called once at t = T − 1; `method` picks the loss terms:

  regress  the teacher's 15-step deterministic sample from the same prior noise (SinSR's
           distillation loss; TAD-SR's regression term), weight 1;
  hr       regression to the HR only (the supervised baseline);
  tadsr    TAD-SR (LearningHx/TAD-SR `configs/TAD-SR.yaml`): regression 1 + high-frequency
           score distillation 1 at t ∈ {0, 1, 2} toward the teacher's sample + the
           time-aware discriminator on the teacher's encoder features at t ∈ {0 … 13},
           GAN weight 0.02 (hinge). Paper recipe: AdamW lr 5e-5 (student and
           discriminator), batch 64, 30K iterations, EMA 0.999, on ImageNet with
           Real-ESRGAN degradations, teacher ResShift (15 steps, κ = 2) in VQ-f4 latents.

The teacher is the run in `teacher` (a workdir; default: `benchmarks/ditsr.py`'s clean-
track DiT-SR); the student's model and the process fields are taken from that run, so
they match by construction. Data, degradation and eval as the teacher's config
(`configs/ditsr_photos.py`: the embedded photos at CPU scale).

  python experiments/train.py --config=configs/onestep_sr.py:method=tadsr \\
      --workdir=workdirs/onestep_tadsr
  python experiments/upscale.py --workdir=workdirs/onestep_tadsr --input=lr.png --output=sr.png

Arguments: method (regress | hr | tadsr), teacher (workdir), steps, batch, patch, lr, seed.
Expected cost of the paper recipe (size=paper teacher, 256² HR, batch 64, 30K steps, 15
teacher calls per step for the regression target): about 2 days on 8 A100s in the
paper's latent space; not run here.
"""

import os

from effcomp import config as config_lib
from effcomp.tasks import diffusion_sr, onestep_sr

METHODS = {
    "regress": {"teacher_weight": 1.0},
    "hr": {"teacher_weight": 0.0, "hr_weight": 1.0},
    "tadsr": {"teacher_weight": 1.0, "hsd_weight": 1.0, "hsd_max_t": 3, "gan_weight": 0.02},
}
DEFAULT_TEACHER = os.path.join("workdirs", "bench_ditsr", "bicubic", "dit_sr")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="regress", teacher=DEFAULT_TEACHER, steps=600, batch=8,
                           patch=32, lr=5e-5, seed=0)
  if a.method not in METHODS:
    raise ValueError(f"config argument method={a.method!r}: expected one of {sorted(METHODS)}")
  teacher = config_lib.from_workdir(a.teacher)
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = teacher.model.to_dict()
  config.data = teacher.data.to_dict()
  config.eval = teacher.eval.to_dict()
  config.task = onestep_sr.task_defaults()
  for name in diffusion_sr.task_defaults():
    if name in teacher.task and name != "name":
      config.task[name] = teacher.task[name]
  config.task.patch_size = a.patch
  config.task.update(METHODS[a.method])
  config.teacher.workdir = a.teacher
  config.teacher.ema = teacher.eval.use_ema and teacher.train.ema_decay > 0  # as it evaluated
  config.train.steps = a.steps
  config.train.batch_size = a.batch
  config.train.log_every = 25
  config.train.eval_every = max(a.steps // 4, 1)
  config.train.ema_decay = 0.999  # SinSR / TAD-SR ema_rate
  config.train.ema_warmup = True
  config.checkpoint.every_steps = max(a.steps // 4, 1)
  config.optimizer.name = "adamw"
  config.optimizer.lr = a.lr
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = a.steps // 20
  return config_lib.lock(config)
