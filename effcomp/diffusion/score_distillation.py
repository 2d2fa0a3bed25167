"""TAD-SR's high-frequency score distillation (HSD) for a one-step student of a residual-
shifting (ResShift) teacher.

He et al., "TAD-SR: Time-Aware Distillation for Efficient Diffusion Super-Resolution";
follows the official `training_losses_distill` (LearningHx/TAD-SR, commit 8b0373fd,
`TAD-SR/models/gaussian_diffusion.py`, `distill_type='HSD'`). The student's output ẑ and
a target z* (the teacher's multi-step output from the same prior noise, or the HR) are
noised to a small timestep t with one shared noise n,

  x_t(z) = z + η_t(y − z) + κ√η_t·n,

the frozen teacher predicts x̂_0 from each, and the implied noises
ε(z) = (x_t(z) − x̂_0 − η_t(y − x̂_0)) / (κ√η_t) give the gradient

  ∂L/∂ẑ = (ε(ẑ) − ε(z*)) / (C·H·W)    (the loss mean_{CHW}(sg(ε(ẑ) − ε(z*))·ẑ)).

Expanded, ε(z) = n + (1 − η_t)/(κ√η_t)·(z − x̂_0(x_t(z))): the score-distillation (SDS)
residual of the student minus the same residual at the target, so the teacher's own bias
cancels and the gradient vanishes when ẑ = z*. Small t (official: t ∈ {0, 1, 2} of 15)
perturbs only fine detail: the paper's "high-frequency" focus is this restriction (the
code has no frequency filter). `target=None` is the plain SDS ablation ε(ẑ) − n.

Deviations from the official code (documented, deliberate): n is Gaussian (the process's
noise; the code draws `rand_like`, uniform on [0, 1), which `noise` can reproduce) and the
teacher's input is scaled once (the code scales it twice inside `ddim_sample`).
"""

from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from effcomp.diffusion import resshift

# x̂_0 of the frozen teacher at the unscaled state x_t and timesteps t [B].
TeacherX0 = Callable[[jax.Array, jax.Array], jax.Array]


def implied_noise(schedule: resshift.ResShiftSchedule, x_t: jax.Array, x0: jax.Array,
                  y: jax.Array, t: jax.Array) -> jax.Array:
  """ε with x_t = x̂_0 + η_t(y − x̂_0) + κ√η_t·ε."""
  mean, _ = resshift.q_mean_variance(schedule, x0, y, t)
  std = schedule.kappa * schedule.sqrt_etas[t].reshape(t.shape + (1,) * (x_t.ndim - 1))
  return (x_t - mean) / std


def hsd_gradient(teacher_x0: TeacherX0, student: jax.Array, target: Optional[jax.Array],
                 y: jax.Array, t: jax.Array, noise: jax.Array,
                 schedule: resshift.ResShiftSchedule) -> jax.Array:
  """ε(ẑ) − ε(z*) (module docstring), or ε(ẑ) − n when `target` is None; no gradient
  flows through it."""
  student = jax.lax.stop_gradient(student)
  x_s = resshift.q_sample(schedule, student, y, t, noise)
  eps_s = implied_noise(schedule, x_s, teacher_x0(x_s, t), y, t)
  if target is None:
    grad = eps_s - noise
  else:
    x_t = resshift.q_sample(schedule, jax.lax.stop_gradient(target), y, t, noise)
    grad = eps_s - implied_noise(schedule, x_t, teacher_x0(x_t, t), y, t)
  return jax.lax.stop_gradient(jnp.nan_to_num(grad))


def hsd_loss(teacher_x0: TeacherX0, student: jax.Array, target: Optional[jax.Array],
             y: jax.Array, t: jax.Array, noise: jax.Array, schedule: resshift.ResShiftSchedule
             ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Per-example loss [B] whose gradient in `student` is `hsd_gradient` / (C·H·W), and
  {'hsd_grad_norm': [B]} (the gradient's RMS per example)."""
  grad = hsd_gradient(teacher_x0, student, target, y, t, noise, schedule)
  axes = tuple(range(1, student.ndim))
  return (jnp.mean(grad * student, axis=axes),
          {"hsd_grad_norm": jnp.sqrt(jnp.mean(jnp.square(grad), axis=axes))})
