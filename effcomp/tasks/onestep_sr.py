"""One-step diffusion super-resolution, distilled from a residual-shifting (ResShift) teacher.

The student is the teacher's network, initialized from its weights (`warm_start`), called
once: from the prior state x_T = y + κ√η_T·ε (y: the LR upsampled to the HR size; ε a
fresh Gaussian draw per example and step, as SinSR's and TAD-SR's trainers; a fixed draw
at evaluation) at t = T − 1 it predicts x̂_0, the SR image (SinSR `--one_step`,
wyf0912/SinSR `trainer.py` and `gaussian_diffusion.py` p_sample_loop(one_step=True)). The
teacher (`config.teacher.workdir`, a finished `diffusion_sr` run) stays frozen.

The loss is a weighted sum of composable terms (a weight of 0 drops the term and its
cost); `configs/onestep_sr.py:method=…` sets the weights of each paper's recipe:

  teacher_weight  ‖x̂_0 − sg(teacher's T-step deterministic sample from the same x_T)‖²
                  (SinSR's distillation loss, TAD-SR's regression loss; mean over C·H·W);
  hr_weight       ‖x̂_0 − HR‖² (regression to the ground truth);
  hsd_weight      TAD-SR's high-frequency score distillation at t ∈ {0 … hsd_max_t − 1}
                  toward the teacher's sample ('teacher') or the HR ('hr')
                  (`effcomp.diffusion.score_distillation`);
  gan_weight      TAD-SR's time-aware adversarial loss: the frozen teacher's encoder
                  features of the HR and of x̂_0, both noised to a t ∈ {0 … T − 2}, judged
                  by `TimeAwareDiscriminator` (params['discriminator']); the student gets
                  gan_weight·(−D(fake)), the discriminator the hinge loss.

TAD-SR (official code, LearningHx/TAD-SR 8b0373fd `configs/TAD-SR.yaml`): teacher 1,
HSD 1 with t ∈ {0, 1, 2}, GAN 0.02, discriminator t ∈ {0 … 13}, AdamW lr 5e-5 for both
networks, 30K iterations. Deviations: the student and the discriminator are updated in
one step from one summed loss (each term sees the other network's parameters through
`stop_gradient`: the simultaneous form of the official D-step-then-G-step), sharing one
optimizer and schedule (the official warm-up is on the student only); the noise that
perturbs images for the HSD and the discriminator is Gaussian (`perturbation_noise=
'uniform'` reproduces the official `rand_like` of both).

Parameters: the student's (the denoiser's tree, so `effcomp.runs.open`, export and the
FLOP counters see the student) plus, with a GAN term, the discriminator's under the extra
top-level key 'time_aware_discriminator' (`split_params`); `OneStepStudent` runs a
trained student (`make_student(run)`; `experiments/upscale.py` uses it). Evaluation: x̂_0
from a fixed noise on the eval crops: PSNR / SSIM on Y, and the MSE to the HR as the loss.
"""

import dataclasses
import functools
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effcomp import config as config_lib
from effcomp.diffusion import resshift, score_distillation
from effcomp.losses import adversarial
from effcomp.metrics import image as image_metrics
from effcomp.models.sr.time_aware_discriminator import TimeAwareDiscriminator
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks import diffusion_sr, sr
from effcomp.tasks.base import Task, task_config

EvalMetrics = sr.EvalMetrics
PROCESS_FIELDS = ("scale", "steps", "kappa", "min_noise_level", "etas_end", "power",
                  "prediction", "normalize_input")
HSD_TARGETS = ("teacher", "hr")
DISCRIMINATOR = "time_aware_discriminator"  # its parameters' key beside the student's
NOISES = ("gaussian", "uniform")


def task_defaults() -> ml_collections.ConfigDict:
  """The `diffusion_sr` fields (the process must be the teacher's) and the loss terms'."""
  c = diffusion_sr.task_defaults()
  c.name = "onestep_sr"
  c.update({"teacher_weight": 1.0, "hr_weight": 0.0, "hsd_weight": 0.0, "hsd_max_t": 3,
            "hsd_target": "teacher", "perturbation_noise": "gaussian", "gan_weight": 0.0,
            "disc_embed_dim": 160, "disc_logits_per_position": 64})
  return c


def check_config(c: ml_collections.ConfigDict, model, teacher_workdir: str) -> None:
  diffusion_sr.check_config(c, model)
  if c.hsd_target not in HSD_TARGETS:
    raise ValueError(f"config.task.hsd_target={c.hsd_target!r}: expected one of {HSD_TARGETS}")
  if c.perturbation_noise not in NOISES:
    raise ValueError(f"config.task.perturbation_noise={c.perturbation_noise!r}: expected one "
                     f"of {NOISES}")
  if not 1 <= c.hsd_max_t <= c.steps:
    raise ValueError(f"config.task.hsd_max_t={c.hsd_max_t}: expected 1 … steps={c.steps}")
  weights = [c.teacher_weight, c.hr_weight, c.hsd_weight, c.gan_weight]
  if min(weights) < 0 or not any(weights):
    raise ValueError(f"config.task weights {weights} (teacher, hr, hsd, gan): expected ≥ 0, "
                     "at least one > 0")
  if not teacher_workdir:
    raise ValueError("config.teacher.workdir: a one-step student needs its diffusion_sr "
                     "teacher's workdir")
  teacher = task_config(config_lib.from_workdir(teacher_workdir), diffusion_sr.task_defaults())
  for name in PROCESS_FIELDS:
    if teacher[name] != c[name]:
      raise ValueError(f"config.task.{name}={c[name]!r}: the teacher in {teacher_workdir} "
                       f"was trained with {teacher[name]!r}; the process must be the same")


def split_params(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
  """(the student's parameters, the discriminator's or None)."""
  return {k: v for k, v in params.items() if k != DISCRIMINATOR}, params.get(DISCRIMINATOR)


def _mean_flat(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


@TASKS.register("onestep_sr")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A one-step distillation `Task` for student `model` (module docstring)."""
  c = task_config(config, task_defaults())
  check_config(c, model, config.teacher.workdir)
  if teacher_model is None:
    raise ValueError("onestep_sr: no teacher model (config.teacher.workdir)")
  schedule = diffusion_sr.schedule_of(c)
  process = diffusion_sr.process_args(c)
  last = schedule.num_timesteps - 1
  disc = (TimeAwareDiscriminator(c.disc_embed_dim, c.disc_logits_per_position)
          if c.gan_weight else None)

  def teacher_fn(teacher_variables, y):
    v = jax.lax.stop_gradient(teacher_variables)
    return lambda x, t: teacher_model.apply(v, x, t, y)

  def teacher_features(teacher_variables, images, y, t, noise):
    """The frozen teacher's encoder features of `images` noised to t (gradients flow
    through its activations to `images`, never into its weights)."""
    x_t = resshift.q_sample(schedule, images, y, t, noise)
    x_in = resshift.model_input(schedule, x_t, t, c.normalize_input, False)
    return teacher_model.apply(jax.lax.stop_gradient(teacher_variables), x_in, t, y,
                               encoder_only=True)

  def student(params, x_T, y, train, rng):
    fn = lambda x, t: model.apply({"params": params}, x, t, y, train=train,
                                  rngs={"dropout": rng})
    return resshift.denoise(fn, x_T, y, jnp.full(y.shape[:1], last), schedule, **process)

  def init_fn(rng, batch):
    x = diffusion_sr.to_model_space(jnp.asarray(batch["hr"]))
    t = jnp.zeros(x.shape[:1], jnp.int32)
    r_student, r_disc = jax.random.split(rng)
    variables = model.init({"params": r_student, "dropout": r_student}, x, t, x)
    if disc is None:
      return variables
    d = disc.init(r_disc, model.apply(variables, x, t, x, encoder_only=True), t)
    return {"params": {**variables["params"], DISCRIMINATOR: d["params"]},
            "batch_stats": {DISCRIMINATOR: d["batch_stats"]}}

  def noise_like(rng, x):
    if c.perturbation_noise == "uniform":
      return jax.random.uniform(rng, x.shape, x.dtype)
    return jax.random.normal(rng, x.shape, x.dtype)

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del step
    hr, y = diffusion_sr.model_pair(batch["hr"], batch["lr"], c.scale)
    keys = jax.random.split(rng, 6)
    x_T = resshift.prior_sample(schedule, y, jax.random.normal(keys[0], y.shape, y.dtype))
    student_params, disc_params = split_params(params)
    out = student(student_params, x_T, y, True, keys[1])
    terms: Dict[str, jax.Array] = {}
    metrics: Dict[str, jax.Array] = {}
    t_fn = teacher_fn(teacher_variables, y)
    sample = None
    if c.teacher_weight or (c.hsd_weight and c.hsd_target == "teacher"):
      sample = jax.lax.stop_gradient(resshift.ddim_sample(t_fn, x_T, y, schedule, **process))
    if c.teacher_weight:
      terms["teacher"] = c.teacher_weight * _mean_flat(jnp.square(out - sample))
    if c.hr_weight:
      terms["hr"] = c.hr_weight * _mean_flat(jnp.square(out - hr))
    if c.hsd_weight:
      b = y.shape[0]
      t = jax.random.randint(keys[2], (b,), 0, c.hsd_max_t)
      teacher_x0 = lambda x_t, tt: resshift.denoise(t_fn, x_t, y, tt, schedule, **process)
      hsd, extra = score_distillation.hsd_loss(
          teacher_x0, out, sample if c.hsd_target == "teacher" else hr, y, t,
          noise_like(keys[3], out), schedule)
      terms["hsd"] = c.hsd_weight * hsd
      metrics.update({k: jnp.mean(v) for k, v in extra.items()})
    if c.gan_weight:
      b = y.shape[0]
      t = jax.random.randint(keys[4], (b,), 0, last)
      n = noise_like(keys[5], out)
      real = jax.lax.stop_gradient(teacher_features(teacher_variables, hr, y, t, n))
      fake = teacher_features(teacher_variables, out, y, t, n)
      stats = model_state["batch_stats"][DISCRIMINATOR]

      def judge(p, features, stats):
        logits, new = disc.apply({"params": p, "batch_stats": stats}, features, t, train=True,
                                 mutable=["batch_stats"])
        return logits, new["batch_stats"]

      fake_g, _ = judge(jax.lax.stop_gradient(disc_params), fake, stats)
      terms["gan"] = c.gan_weight * adversarial.hinge_generator_loss(fake_g)
      real_d, stats = judge(disc_params, real, stats)
      fake_d, stats = judge(disc_params, jax.lax.stop_gradient(fake), stats)
      terms["disc"] = adversarial.hinge_discriminator_loss(real_d, fake_d)
      metrics["d_real"], metrics["d_fake"] = jnp.mean(real_d), jnp.mean(fake_d)
      model_state = {**model_state, "batch_stats": {DISCRIMINATOR: stats}}
    metrics.update({k: jnp.mean(v) for k, v in terms.items()})
    metrics["mse_hr"] = jnp.mean(jnp.square(jax.lax.stop_gradient(out) - hr))
    return jnp.mean(sum(terms.values())), (model_state, metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    hr, y = diffusion_sr.model_pair(batch["hr"], batch["lr"], c.scale)
    key = jax.random.key(c.eval_seed)
    x_T = resshift.prior_sample(schedule, y, jax.random.normal(key, y.shape, y.dtype))
    out = jnp.clip(student(split_params(params)[0], x_T, y, False, key), -1.0, 1.0)
    sr8 = diffusion_sr.to_uint8(out).astype(jnp.float32)
    hr8 = batch["hr"].astype(jnp.float32)
    return EvalMetrics.single_from_model_output(
        loss=_mean_flat(jnp.square(out - hr)), psnr=image_metrics.psnr_y_batch(sr8, hr8, c.scale),
        ssim=image_metrics.ssim_y_batch(sr8, hr8, c.scale), mask=batch["mask"])

  def teacher_init_fn(rng, batch):
    x = diffusion_sr.to_model_space(jnp.asarray(batch["hr"]))
    return teacher_model.init({"params": rng, "dropout": rng}, x, jnp.zeros(x.shape[:1], jnp.int32),
                              x)

  def warm_start(params, teacher_variables):
    """The student starts as a copy of the teacher (SinSR / TAD-SR: deepcopy)."""
    teacher = teacher_variables["params"]
    student_params, disc_params = split_params(params)
    if jax.tree.structure(teacher) != jax.tree.structure(student_params):
      raise ValueError("config.model: the student must be the teacher's architecture "
                       "(its parameters are copied from config.teacher.workdir)")
    params = jax.tree.map(jnp.copy, teacher)
    return (params if disc_params is None else {**params, DISCRIMINATOR: disc_params}), {}

  return Task(
      model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn, eval_metrics=EvalMetrics,
      train_source=train_source, eval_source=eval_source, summary_metric="psnr",
      train_example_transform=lambda example, rng: sr.random_pair(example["image"], rng, c),
      eval_example_transform=lambda example, rng: diffusion_sr.eval_pair(example["image"], c),
      teacher_init_fn=teacher_init_fn, warm_start=warm_start)


@dataclasses.dataclass(frozen=True)
class OneStepStudent:
  """A trained one-step student: `upscale(lr)` for uint8 images, `__call__(y, rng)` in model
  space (x̂_0 from y + κ√η_T·ε at t = T − 1, clipped to [−1, 1])."""
  model: Any
  params: Any  # the student's (`split_params`)
  schedule: resshift.ResShiftSchedule
  config: ml_collections.ConfigDict  # the task fields

  @property
  def scale(self) -> int:
    return self.config.scale

  @functools.cached_property
  def _fn(self):
    def run(y, rng):
      x_T = resshift.prior_sample(self.schedule, y, jax.random.normal(rng, y.shape, y.dtype))
      fn = lambda x, t: self.model.apply({"params": self.params}, x, t, y)
      t = jnp.full(y.shape[:1], self.schedule.num_timesteps - 1)
      out = resshift.denoise(fn, x_T, y, t, self.schedule, **diffusion_sr.process_args(self.config))
      return jnp.clip(out, -1.0, 1.0)
    return jax.jit(run)

  def __call__(self, y: jax.Array, rng: jax.Array) -> jax.Array:
    return self._fn(y, rng)

  def upscale(self, lr: np.ndarray, rng: jax.Array, tile: int = 0, overlap: int = 8
              ) -> np.ndarray:
    """uint8 SR [H·s, W·s, 3] of a uint8 LR [H, W, 3] (tiles as `ResShiftTeacher.upscale`)."""
    return diffusion_sr.tiled_sample(self, self.model, self.scale, lr, rng, tile, overlap)


def make_student(model, params, config: ml_collections.ConfigDict) -> OneStepStudent:
  """The `OneStepStudent` of an opened `onestep_sr` run (its model, params, config)."""
  c = task_config(config, task_defaults())
  return OneStepStudent(model, split_params(params)[0], diffusion_sr.schedule_of(c), c)


@MODEL_INPUTS.register("onestep_sr")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """(x_t, t, y) of one eval-sized crop (the student's call)."""
  del model
  return diffusion_sr.eval_crop_inputs(task_config(config, task_defaults()))
