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
                  by `TimeAwareDiscriminator` (params['time_aware_discriminator']); the
                  student gets gan_weight·(−D(fake)), the discriminator the hinge loss;
  ess_weight      VPD-SR's explicit semantic-aware supervision: 1 − cos between a frozen
                  image encoder's features of x̂_0 and of the HR (`effcomp.losses.semantic`;
                  `ess_encoder` = '<kind>:<path>' of `FEATURE_ENCODERS`: 'run:<workdir>'
                  the rotation-trained stand-in CNN, 'clip:<folder>' a Hugging Face CLIP);
  hfp_weight      VPD-SR's high-frequency perception loss: L1 of the Haar detail bands of
                  x̂_0 against the HR's, `hfp_levels` levels (`effcomp.losses.high_frequency`).

`adapter='mor'` trains MoR instead of the whole student: the teacher's weights stay frozen
(`mor_train_base`) and rank-1 LoRA experts on the `mor_targets` Dense layers
(`effcomp.nn.lora`: `mor_shared` always-on ranks, `mor_routed` routed ranks, `mor_zero`
zero-expert slots, top-`mor_top_k` per layer and image) are routed by a per-layer router
from the degradation severities that `DegradationEstimator` reads off y (trained beside,
by regression to the pipeline's drawn severities `batch['severity']`, weight
`mor_estimator_weight`; the routers see it through `stop_gradient`). The balance term is
MoR's degradation-aware load-balancing loss (weight `mor_alpha`; `mor_severity_aware=False`
is the conventional one, the MoR-v2 ablation); `mor_routing='fixed'` is the dense LoRA of
rank mor_shared + mor_top_k (the fixed-expert ablation). Its parameters live under the
top-level key 'mor'.

TAD-SR (official code, LearningHx/TAD-SR 8b0373fd `configs/TAD-SR.yaml`): teacher 1,
HSD 1 with t ∈ {0, 1, 2}, GAN 0.02, discriminator t ∈ {0 … 13}, AdamW lr 5e-5 for both
networks, 30K iterations. Deviations: the student and the discriminator are updated in
one step from one summed loss (each term sees the other network's parameters through
`stop_gradient`: the simultaneous form of the official D-step-then-G-step), sharing one
optimizer and schedule (the official warm-up is on the student only); the noise that
perturbs images for the HSD and the discriminator is Gaussian (`perturbation_noise=
'uniform'` reproduces the official `rand_like` of both).

Parameters: the student's (the denoiser's tree, so export and the FLOP counters see the
student; with MoR also 'mor') plus, with a GAN term, the discriminator's under the extra
top-level key 'time_aware_discriminator' (`split_params`; `init_variables` makes them all,
so `effcomp.runs.open` restores them); `OneStepStudent` runs a
trained student (`make_student(run)`; `experiments/upscale.py` uses it). Evaluation: x̂_0
from a fixed noise on the eval crops: PSNR / SSIM on Y, and the MSE to the HR as the loss.
"""

import dataclasses
import functools
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effcomp import config as config_lib
from effcomp.diffusion import resshift, score_distillation
from effcomp.losses import adversarial, high_frequency, semantic
from effcomp.metrics import image as image_metrics
from effcomp.models.sr.degradation_estimator import DegradationEstimator
from effcomp.models.sr.time_aware_discriminator import TimeAwareDiscriminator
from effcomp.nn import lora
from effcomp.registry import (DEGRADATION_SCORERS, FEATURE_ENCODERS, MODEL_INITS,
                              MODEL_INPUTS, TASKS)
from effcomp.tasks import diffusion_sr, sr
from effcomp.tasks.base import Task, task_config

EvalMetrics = sr.EvalMetrics
PROCESS_FIELDS = ("scale", "steps", "kappa", "min_noise_level", "etas_end", "power",
                  "prediction", "normalize_input")
HSD_TARGETS = ("teacher", "hr")
DISCRIMINATOR = "time_aware_discriminator"  # its parameters' key beside the student's
MOR = "mor"  # the MoR adapters', routers' and estimator's key beside the student's
NOISES = ("gaussian", "uniform")
ADAPTERS = ("none", "mor")
ROUTINGS = ("degradation", "fixed")
ESTIMATOR = DegradationEstimator()


def task_defaults() -> ml_collections.ConfigDict:
  """The `diffusion_sr` fields (the process must be the teacher's) and the loss terms'."""
  c = diffusion_sr.task_defaults()
  c.name = "onestep_sr"
  c.update({"teacher_weight": 1.0, "hr_weight": 0.0, "hsd_weight": 0.0, "hsd_max_t": 3,
            "hsd_target": "teacher", "perturbation_noise": "gaussian", "gan_weight": 0.0,
            "disc_embed_dim": 160, "disc_logits_per_position": 64,
            "ess_weight": 0.0, "ess_encoder": "", "hfp_weight": 0.0, "hfp_levels": 2,
            "adapter": "none", "mor_targets": "qkv,proj,fc1,fc2", "mor_shared": 2,
            "mor_routed": 8, "mor_zero": 4, "mor_top_k": 2, "mor_routing": "degradation",
            "mor_scale": 1.0, "mor_alpha": 0.01, "mor_severity_aware": True,
            "mor_estimator": "", "mor_estimator_weight": 1.0, "mor_train_base": False})
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
  weights = [c.teacher_weight, c.hr_weight, c.hsd_weight, c.gan_weight, c.ess_weight,
             c.hfp_weight]
  if min(weights) < 0 or not any(weights):
    raise ValueError(f"config.task weights {weights} (teacher, hr, hsd, gan, ess, hfp): "
                     "expected ≥ 0, at least one > 0")
  if c.ess_weight and ":" not in c.ess_encoder:
    raise ValueError(f"config.task.ess_encoder={c.ess_encoder!r}: expected '<kind>:<path>' "
                     f"with kind one of {FEATURE_ENCODERS.names()}")
  if c.hfp_weight and c.patch_size % 2 ** c.hfp_levels:
    raise ValueError(f"config.task.hfp_levels={c.hfp_levels}: patch_size={c.patch_size} "
                     "must be divisible by 2^hfp_levels")
  if c.mor_estimator and ":" not in c.mor_estimator:
    raise ValueError(f"config.task.mor_estimator={c.mor_estimator!r}: expected '' (the "
                     "trained estimator) or '<kind>:<path>' with kind one of "
                     f"{DEGRADATION_SCORERS.names()}")
  if c.adapter not in ADAPTERS:
    raise ValueError(f"config.task.adapter={c.adapter!r}: expected one of {ADAPTERS}")
  if c.mor_routing not in ROUTINGS:
    raise ValueError(f"config.task.mor_routing={c.mor_routing!r}: expected one of {ROUTINGS}")
  if c.adapter == "mor" and not (c.mor_shared >= 0 and c.mor_routed >= 1 and c.mor_zero >= 0
                                 and 1 <= c.mor_top_k <= c.mor_routed + c.mor_zero):
    raise ValueError(f"config.task mor_shared={c.mor_shared}, mor_routed={c.mor_routed}, "
                     f"mor_zero={c.mor_zero}, mor_top_k={c.mor_top_k}: expected ≥ 0, ≥ 1, "
                     "≥ 0 and 1 ≤ top_k ≤ routed + zero")
  if not teacher_workdir:
    raise ValueError("config.teacher.workdir: a one-step student needs its diffusion_sr "
                     "teacher's workdir")
  teacher = task_config(config_lib.from_workdir(teacher_workdir), diffusion_sr.task_defaults())
  for name in PROCESS_FIELDS:
    if teacher[name] != c[name]:
      raise ValueError(f"config.task.{name}={c[name]!r}: the teacher in {teacher_workdir} "
                       f"was trained with {teacher[name]!r}; the process must be the same")


def split_params(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Any]:
  """(the student's parameters (with 'mor'), the discriminator's or None)."""
  return _without(params, DISCRIMINATOR), params.get(DISCRIMINATOR)


def _without(params: Dict[str, Any], key: str) -> Dict[str, Any]:
  return {k: v for k, v in params.items() if k != key}


def _targets(c) -> Tuple[str, ...]:
  return tuple(name.strip() for name in c.mor_targets.split(",") if name.strip())


def mor_ranks(c) -> int:
  """The adapters' rank: shared + routed ranks (fixed routing: shared + top_k)."""
  return c.mor_shared + (c.mor_top_k if c.mor_routing == "fixed" else c.mor_routed)


@functools.lru_cache(maxsize=4)
def _scorer(spec: str):
  """The frozen scorer of `spec`, loaded eagerly even when first asked for inside a jitted
  function (its checkpoint restore and prompt embeddings are not part of the trace)."""
  kind, path = spec.split(":", 1)
  with jax.ensure_compile_time_eval():
    return DEGRADATION_SCORERS.get(kind)(path)


def _severity(mor: Dict[str, Any], y: jax.Array, c) -> jax.Array:
  """Degradation scores [B, K] of y: the frozen scorer's, or the trained estimator's."""
  if c.mor_estimator:
    return jax.lax.stop_gradient(_scorer(c.mor_estimator)(y))
  return ESTIMATOR.apply({"params": mor["estimator"]}, y)


def init_mor(rng: jax.Array, base_params: Any, y: jax.Array, c) -> Dict[str, Any]:
  """MoR's parameters: {'adapters': `lora.init_adapters`, 'routers': {path: Dense(K →
  routed + zero)}, and with no frozen scorer 'estimator': `DegradationEstimator`'s}."""
  k_adapters, k_routers, k_estimator = jax.random.split(rng, 3)
  mor = {"adapters": lora.init_adapters(k_adapters, base_params, _targets(c), mor_ranks(c))}
  if not c.mor_estimator:
    mor["estimator"] = ESTIMATOR.init(k_estimator, y)["params"]
  if c.mor_routing == "degradation":
    scores = _severity(mor, y, c).shape[-1]
    experts = c.mor_routed + c.mor_zero
    mor["routers"] = {path: {"kernel": 0.1 * jax.random.normal(
        jax.random.fold_in(k_routers, i), (scores, experts)), "bias": jnp.zeros((experts,))}
                      for i, path in enumerate(sorted(mor["adapters"]))}
  return mor


def denoiser(model, params: Dict[str, Any], y: jax.Array, c, train: bool = False,
             rng=None) -> Tuple[Any, Dict[str, Any]]:
  """(fn(x, t) → the student's network output at y, info): plain, or with MoR's adapters
  routed from y's estimated severities (info: 'severity' [B, K], and per layer 'probs',
  'chosen' of its router, 'active' [B] ranks per layer averaged over layers)."""
  kwargs = {"train": True, "rngs": {"dropout": rng}} if train else {}
  base, mor = _without(params, MOR), params.get(MOR)
  if mor is None:
    return lambda x, t: model.apply({"params": base}, x, t, y, **kwargs), {}
  if not c.mor_train_base:
    base = jax.lax.stop_gradient(base)
  severity = _severity(mor, y, c)
  info: Dict[str, Any] = {"severity": severity}
  gates = None
  if c.mor_routing == "degradation":
    s = jax.lax.stop_gradient(severity)
    gates, layers = {}, {}
    for path, router in mor["routers"].items():
      gates[path], layers[path] = lora.mor_gates(s @ router["kernel"] + router["bias"],
                                                  c.mor_shared, c.mor_routed, c.mor_top_k)
    info["layers"] = layers
    info["active"] = sum(v["active"] for v in layers.values()) / len(layers)
  else:
    info["active"] = jnp.full(y.shape[:1], float(mor_ranks(c)))

  def fn(x, t):
    with lora.adapted(mor["adapters"], c.mor_scale, gates):
      return model.apply({"params": base}, x, t, y, **kwargs)
  return fn, info


def mor_losses(info: Dict[str, Any], severity: jax.Array, c) -> Dict[str, jax.Array]:
  """MoR's per-example terms: the estimator's regression to the drawn severities (unless a
  frozen scorer routes), and the load-balancing loss averaged over layers (the same for
  every example)."""
  terms = {}
  if not c.mor_estimator:
    terms["estimator"] = c.mor_estimator_weight * _mean_flat(
        jnp.square(info["severity"] - severity))
  if c.mor_alpha and "layers" in info:
    s = jnp.mean(jax.lax.stop_gradient(info["severity"]), axis=-1) if c.mor_severity_aware else 1.0
    balance = sum(lora.load_balance_loss(v["probs"], v["chosen"], c.mor_routed, s, c.mor_alpha)
                  for v in info["layers"].values()) / len(info["layers"])
    terms["balance"] = jnp.broadcast_to(balance, severity.shape[:1])
  return terms


def discriminator(c) -> TimeAwareDiscriminator:
  """TAD-SR's time-aware discriminator of the task's config."""
  return TimeAwareDiscriminator(c.disc_embed_dim, c.disc_logits_per_position)


def init_variables(c, model, rng: jax.Array, x: jax.Array, t: jax.Array, y: jax.Array
                   ) -> Dict[str, Any]:
  """Every trained variable: the student's, MoR's ('mor'), the discriminator's and its
  spectral-norm state ('time_aware_discriminator')."""
  r_student, r_disc, r_mor = jax.random.split(rng, 3)
  variables = model.init({"params": r_student, "dropout": r_student}, x, t, y)
  params, state = dict(variables["params"]), {k: v for k, v in variables.items() if k != "params"}
  if c.adapter == "mor":
    params[MOR] = init_mor(r_mor, nn.unbox(variables["params"]), y, c)
  if c.gan_weight:
    d = discriminator(c).init(r_disc, model.apply(variables, x, t, y, encoder_only=True), t)
    params[DISCRIMINATOR] = d["params"]
    state["batch_stats"] = {DISCRIMINATOR: d["batch_stats"]}
  return {"params": params, **state}


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
  disc = discriminator(c) if c.gan_weight else None
  if c.ess_weight:
    kind, path = c.ess_encoder.split(":", 1)
    encoder = FEATURE_ENCODERS.get(kind)(path)

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
    fn, info = denoiser(model, params, y, c, train, rng)
    return resshift.denoise(fn, x_T, y, jnp.full(y.shape[:1], last), schedule, **process), info

  def init_fn(rng, batch):
    x = diffusion_sr.to_model_space(jnp.asarray(batch["hr"]))
    return init_variables(c, model, rng, x, jnp.zeros(x.shape[:1], jnp.int32), x)

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
    out, info = student(student_params, x_T, y, True, keys[1])
    terms: Dict[str, jax.Array] = {}
    metrics: Dict[str, jax.Array] = {}
    if MOR in student_params:
      terms.update(mor_losses(info, batch["severity"], c))
      metrics["active_ranks"] = jnp.mean(info["active"])
    if c.ess_weight:
      terms["ess"] = c.ess_weight * semantic.ess_loss(encoder(out), encoder(hr))
    if c.hfp_weight:
      terms["hfp"] = c.hfp_weight * high_frequency.hfp_loss(out, hr, c.hfp_levels)
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
      real = teacher_features(teacher_variables, hr, y, t, n)
      fake = teacher_features(teacher_variables, out, y, t, n)
      gen, terms["disc"], stats, logits = adversarial.hinge_gan_terms(
          disc, disc_params, model_state["batch_stats"][DISCRIMINATOR], real, fake, t)
      terms["gan"] = c.gan_weight * gen
      metrics.update(logits)
      model_state = {**model_state, "batch_stats": {DISCRIMINATOR: stats}}
    metrics.update({k: jnp.mean(v) for k, v in terms.items()})
    metrics["mse_hr"] = jnp.mean(jnp.square(jax.lax.stop_gradient(out) - hr))
    return jnp.mean(sum(terms.values())), (model_state, metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del model_state, step, teacher_variables
    hr, y = diffusion_sr.model_pair(batch["hr"], batch["lr"], c.scale)
    key = jax.random.key(c.eval_seed)
    x_T = resshift.prior_sample(schedule, y, jax.random.normal(key, y.shape, y.dtype))
    out = jnp.clip(student(split_params(params)[0], x_T, y, False, key)[0], -1.0, 1.0)
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
    """The student starts as a copy of the teacher (SinSR / TAD-SR: deepcopy); MoR's and
    the discriminator's parameters keep their initialization."""
    teacher = teacher_variables["params"]
    extra = {k: v for k, v in params.items() if k in (MOR, DISCRIMINATOR)}
    if jax.tree.structure(teacher) != jax.tree.structure(_without(_without(params, MOR),
                                                                   DISCRIMINATOR)):
      raise ValueError("config.model: the student must be the teacher's architecture "
                       "(its parameters are copied from config.teacher.workdir)")
    return {**jax.tree.map(jnp.copy, teacher), **extra}, {}

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
      fn, info = denoiser(self.model, self.params, y, self.config)
      t = jnp.full(y.shape[:1], self.schedule.num_timesteps - 1)
      out = resshift.denoise(fn, x_T, y, t, self.schedule, **diffusion_sr.process_args(self.config))
      return jnp.clip(out, -1.0, 1.0), {k: info[k] for k in ("severity", "active") if k in info}
    return jax.jit(run)

  def __call__(self, y: jax.Array, rng: jax.Array) -> jax.Array:
    return self._fn(y, rng)[0]

  def with_info(self, y: jax.Array, rng: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """(the SR, {'severity', 'active'} of MoR: estimated severities, mean active ranks per
    adapted layer, per image; {} without MoR)."""
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


@MODEL_INITS.register("onestep_sr")
def run_variables(config: ml_collections.ConfigDict, model, rng, x, t, y) -> Dict[str, Any]:
  """`init_variables` for `effcomp.runs.open`."""
  return init_variables(task_config(config, task_defaults()), model, rng, x, t, y)
