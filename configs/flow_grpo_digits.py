"""Flow-GRPO on the embedded digits: a flow DiT learns to draw the class it is asked for.

`effcomp/tasks/flow_grpo.py`: the policy starts as the teacher (a flow-matching `diffusion`
run of `configs/diffusion_digits.py`, by default `benchmarks/udit.py`'s DiT-T/2 flow run)
and is fine-tuned online: each step samples `prompts` class labels × `group` trajectories
of Flow-GRPO's SDE (10 steps, noise level 0.7), rewards each final image with `reward`
(default: the probability the benchmark's proxy CNN gives the prompted class,
'classifier:workdirs/bench_udit/classifier'), normalizes rewards within each group, and
takes one clipped-policy-gradient step with a KL (β = 0.04) to the frozen teacher.
Evaluation: the same reward on the test split's labels after 40 ODE steps ("denoising
reduction": trained with 10 steps, evaluated with 40), and after the training SDE.

  python benchmarks/udit.py                # or: a flow teacher and a resize-16 CNN of your own
  python experiments/train.py --config=configs/flow_grpo_digits.py --workdir=workdirs/grpo

  # a weaker teacher, which leaves room to improve (≈ 0.3 s a step on 2 CPU cores):
  python experiments/train.py \\
      --config=configs/diffusion_digits.py:model=DiT-T/2,objective=flow,steps=250 \\
      --workdir=workdirs/dit_flow_250
  python experiments/train.py --config=configs/flow_grpo_digits.py:teacher=workdirs/dit_flow_250 \\
      --workdir=workdirs/grpo_250

Reference hyper-parameters (yifan123/flow_grpo `config/base.py`, `config/grpo.py`,
geneval_sd3): SD3.5-M with LoRA, lr 3e-4, AdamW (weight decay 1e-4), gradient clip 1.0,
10 sampling steps, 40 evaluation steps, noise level 0.7, 24 images per prompt, clip range
1e-4, advantages clipped at 5, β = 0.04, timestep fraction 0.99, global reward std, EMA.
Here: the whole tiny DiT is trained (no LoRA) at lr 1e-4 (3e-4 made the reward fall), no
EMA (a few hundred steps), group 8, 8 prompts a step.

Measured (the second command pair, 150 steps, 500 samples of 50 per class, seed 7; not a
benchmark): share of 40-step ODE samples the proxy CNN reads as their class 0.28 → 0.51
(its probability of the prompted class, the reward: 0.25 → 0.45); an MLP classifier the
reward never saw: 0.30 → 0.49. The teacher of the default (1000 steps) starts at 0.98.

Arguments: teacher (workdir of a flow `diffusion` run in pixel space), reward
('<kind>[:<arg>]' of `effcomp.registry.REWARDS`), steps, prompts (train.batch_size), group
(task.group_size), lr, kl (task.kl_beta), eta, sample_steps, seed.

Cost on 2 CPU cores (DiT-T/2, 8 prompts × 8 = 64 trajectories of 10 steps): about 3 s a
step (10 forward passes to sample, one forward/backward on 9 × 64 states, one reference
forward for the KL), so 150 steps ≈ 8 min; an evaluation (360 test labels, 40 ODE + 10 SDE
steps) about 20 s.
"""

import os

from effcomp import config as config_lib
from effcomp.tasks import diffusion, flow_grpo

DEFAULT_TEACHER = os.path.join("workdirs", "bench_udit", "ditt_2_flow")
DEFAULT_REWARD = "classifier:" + os.path.join("workdirs", "bench_udit", "classifier")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, teacher=DEFAULT_TEACHER, reward=DEFAULT_REWARD, steps=150,
                           prompts=8, group=8, lr=1e-4, kl=0.04, eta=0.7, sample_steps=10,
                           seed=0)
  teacher = config_lib.from_workdir(a.teacher)
  if teacher.task.name != "diffusion" or teacher.task.objective != "flow":
    raise ValueError(f"config argument teacher={a.teacher!r}: expected a `diffusion` run with "
                     f"objective='flow', got task {teacher.task.name!r} "
                     f"(objective {teacher.task.get('objective')!r})")
  if teacher.teacher.workdir:
    raise ValueError(f"config argument teacher={a.teacher!r}: a latent diffusion run (its "
                     "autoencoder would need the teacher slot, which holds the reference)")
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = teacher.model.to_dict()
  config.data = teacher.data.to_dict()
  config.task = flow_grpo.task_defaults()
  for name in diffusion.task_defaults():  # the flow process is the teacher's
    if name in teacher.task and name != "name":
      config.task[name] = teacher.task[name]
  config.task.update(reward=a.reward, group_size=a.group, kl_beta=a.kl, eta=a.eta,
                     sample_steps=a.sample_steps)
  config.teacher.workdir = a.teacher
  config.teacher.ema = teacher.eval.use_ema and teacher.train.ema_decay > 0  # as it sampled
  config.train.steps = a.steps
  config.train.batch_size = a.prompts
  config.train.log_every = 10
  config.train.eval_every = max(a.steps // 4, 1)
  config.eval.batch_size = 120
  config.eval.at_start = True  # the teacher's reward: the "before" of the run
  config.checkpoint.every_steps = max(a.steps // 4, 1)
  config.optimizer.name = "adamw"
  config.optimizer.lr = a.lr
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "constant"
  config.optimizer.grad_clip_norm = 1.0
  return config_lib.lock(config)
