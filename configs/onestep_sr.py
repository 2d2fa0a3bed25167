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

  vpdsr    VPD-SR (arXiv 2506.02605; no public code, so the weights are effcomp's own):
           regression to the teacher 1 + ESS 0.1 (1 − cos of a frozen encoder's features of
           the output and the HR: `ess_encoder`, by default the rotation-trained stand-in
           CNN of `configs/stand_in_encoder.py`, a proxy for CLIP; `clip:<folder>` for a
           Hugging Face CLIP) + HFP 0.1 (L1 of 2 levels of Haar detail bands) + the
           adversarial extension (the time-aware discriminator, weight 0.02).
  mor      MoR (AAAI 2026; no public code): the teacher's weights frozen, rank-1 LoRA
           experts on every qkv / proj / fc1 / fc2 Dense, routed per layer and image from
           the degradation estimator's severities (mor_estimator: trained beside on the
           pipeline's severities, or a frozen run), zero-expert slots, MoR's
           degradation-aware balance loss (α 0.01);
           loss: regression to the HR 1 + score distillation toward the HR 1 (effcomp's
           stand-in for MoR's VSD term; its GAN term is left out at CPU scale).
           With CLIP weights, `mor_estimator=clip:<folder>` routes from CLIP's scores
           against 7 antonym prompt pairs, as the paper does.
           size=cpu: 2 shared + 8 routed ranks, 4 zero slots, top-2; size=paper: 8 shared
           + 32 routed, 8 zero slots (not given in the paper), top-8. lr 1e-3 (the paper's
           5e-5 is for 25K steps; a zero-initialized LoRA barely moves in a few hundred).
  mor_fixed      ablation: the same ranks always on (dense LoRA of rank shared + top_k);
  mor_nozero     ablation: no zero-expert slots;
  mor_nobalance  ablation: no load-balancing loss.
  mor_v2         ablation: the conventional balance loss (zero experts not weighted by
                 severity; the paper's MoR-v2).

The teacher is the run in `teacher` (a workdir; default: `benchmarks/ditsr.py`'s clean-
track DiT-SR); the student's model and the process fields are taken from that run, so
they match by construction. Data, degradation and eval as the teacher's config
(`configs/ditsr_photos.py`: the embedded photos at CPU scale).

  python experiments/train.py --config=configs/onestep_sr.py:method=tadsr \\
      --workdir=workdirs/onestep_tadsr
  python experiments/upscale.py --workdir=workdirs/onestep_tadsr --input=lr.png --output=sr.png

Arguments: method, teacher (workdir), ess_encoder ('<kind>:<path>', vpdsr), size (cpu |
paper, mor), mor_estimator (mor: '' trains the estimator beside the student;
'run:<workdir>' a frozen `configs/degradation_estimator.py` run, as the paper's frozen CLIP
scorer; 'clip:<folder>' CLIP itself), steps, batch, patch, lr (default: the method's), seed.
Expected cost of the paper recipe (size=paper teacher, 256² HR, batch 64, 30K steps, 15
teacher calls per step for the regression target): about 2 days on 8 A100s in the
paper's latent space; not run here.
"""

import os

from effcomp import config as config_lib
from effcomp.tasks import diffusion_sr, onestep_sr

_MOR = {"teacher_weight": 0.0, "hr_weight": 1.0, "hsd_weight": 1.0, "hsd_target": "hr",
        "adapter": "mor"}
METHODS = {
    "regress": {"teacher_weight": 1.0},
    "hr": {"teacher_weight": 0.0, "hr_weight": 1.0},
    "tadsr": {"teacher_weight": 1.0, "hsd_weight": 1.0, "hsd_max_t": 3, "gan_weight": 0.02},
    "vpdsr": {"teacher_weight": 1.0, "ess_weight": 0.1, "hfp_weight": 0.1, "hfp_levels": 2,
              "gan_weight": 0.02},
    "mor": _MOR,
    "mor_fixed": {**_MOR, "mor_routing": "fixed"},
    "mor_nozero": {**_MOR, "mor_zero": 0},
    "mor_nobalance": {**_MOR, "mor_alpha": 0.0},
    "mor_v2": {**_MOR, "mor_severity_aware": False},
}
MOR_SIZES = {"cpu": {"mor_shared": 2, "mor_routed": 8, "mor_zero": 4, "mor_top_k": 2},
             "paper": {"mor_shared": 8, "mor_routed": 32, "mor_zero": 8, "mor_top_k": 8}}
LR = {"full": 5e-5, "mor": 1e-3}  # the whole student (SinSR / TAD-SR) | MoR's adapters
DEFAULT_TEACHER = os.path.join("workdirs", "bench_ditsr", "bicubic", "dit_sr")
DEFAULT_ENCODER = "run:" + os.path.join("workdirs", "stand_in_encoder")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="regress", teacher=DEFAULT_TEACHER,
                           ess_encoder=DEFAULT_ENCODER, size="cpu", mor_estimator="", steps=600,
                           batch=8, patch=32, lr=0.0, seed=0)
  if a.method not in METHODS:
    raise ValueError(f"config argument method={a.method!r}: expected one of {sorted(METHODS)}")
  if a.size not in MOR_SIZES:
    raise ValueError(f"config argument size={a.size!r}: expected one of {sorted(MOR_SIZES)}")
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
  mor = METHODS[a.method].get("adapter") == "mor"
  if mor:
    config.task.update(MOR_SIZES[a.size], mor_estimator=a.mor_estimator)
  config.task.update(METHODS[a.method])  # after the size: the ablations override it
  if config.task.ess_weight:
    config.task.ess_encoder = a.ess_encoder
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
  config.optimizer.lr = a.lr or LR["mor" if mor else "full"]
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = a.steps // 20
  return config_lib.lock(config)
