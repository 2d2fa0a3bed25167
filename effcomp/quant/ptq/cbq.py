"""Cross-block reconstruction: CBQ's sliding windows of blocks, learned steps and rounding.

CBQ (Ding et al., "CBQ: Cross-Block Quantization for Large Language Models", 2023 /
ICLR 2025, §3.2–3.3) quantizes a transformer window by window. A window is K consecutive
blocks; consecutive windows overlap by O blocks (stride K − O). For each window it
minimises, over calibration samples,

    L = (ℓ₂ + λ_KL·KL) / (ℓ₂⁰ + λ_KL·KL⁰) + λ_r · f_reg,
    ℓ₂ = ‖Y_q − Y_fp‖² / ‖Y_fp‖²,   KL = KL(softmax(Y_fp) ‖ softmax(Y_q)),

where Y_q is the window's output with fake-quantized kernels, Y_fp the full-precision
target and ℓ₂⁰, KL⁰ the same terms at the start of the window (hard rounding, min–max
steps), learning per kernel
  * the step sizes s (LSQ-style: gradients through `fake_quant_with`), parametrised as
    s = s₀·exp(θ) from the min–max s₀, zero points kept at their min–max values;
  * the rounding (LoRA-Rounding, `lora_rounding.py`): ⌊w/s⌋ + h(V), with f_reg its
    annealed regulariser (mean over the window's kernels' entries).
At the end of a window the blocks that leave it are finalised with hard rounding
(h ≥ ½ → up); blocks shared with the next window carry their learned parameters into it
(with a fresh Adam state and a fresh β schedule) and are finalised when they leave the
last window holding them. `cross_block=False` is the block-wise ablation (K = 1, O = 0,
BRECQ/OmniQuant-style).

Choices where the paper leaves room (documented so results can be read):
  * Inputs: the quantized window reads the already-quantized stream (the outputs of the
    finalised quantized blocks before it, activations fake-quantized), so later windows
    see, and can compensate, the error accumulated so far.
  * Targets (`target`): 'fp' (default) — Y_fp is the FP model's own activation at the
    window's end, from the FP stream (what OmniQuant's code does, and what the paper's
    "guidance from the full-precision model" reads as); 'quant_input' — the FP window
    applied to the quantized stream's input (each window only undoes its own error).
  * KL: between softmaxes over the hidden (last) axis of each token's output, averaged
    over tokens. The reconstruction terms are divided by their starting value, so λ_r
    weighs the regulariser against "the error we started from" whatever the bit width
    (with an absolute weighting, one λ_r left W2 unsaturated and over-pushed W4A4).
  * The rounding matrix V (`rounding_init`): 'offset' (default) V = g ⊙ V₀(s) + A₁A₂,
    V₀(s) = AdaRound's init at the current step (h(V₀) = frac(w/s), no gradient), g a
    learned per-output-channel gain (init 1), A₁A₂ the learned low-rank part (A₂ = 0
    at the start): the soft weight starts at w, the hard rounding at round-to-nearest,
    and the low-rank term changes the decisions. 'svd' is the paper's literal V = A₁A₂
    (truncated SVD of V₀(s₀)); its decisions are limited to the sign patterns of rank-r
    matrices and ignore later changes of s. On the toy model of tests/test_cbq.py
    (held-out output error / RTN's, W2A16g16 and W4A4): 'offset' 0.27 and 0.69, 'svd'
    0.39 and 1.04, no rounding learned 0.49 and 0.91.
  * Each step draws `batch_size` calibration samples at random (without replacement).
  * Defaults (λ_r = 1, learning rates, rank 8, 300 steps) were tuned on that toy model
    (3 residual MLP blocks, width 32); re-tune for real models.
Memory: the two streams at the window's start and the window's targets, [N, T, E] each;
forward passes over all N run in chunks of `batch_size` samples.

Shapes: inputs [N, T, E]; kernels [in, out] at '/'-joined paths of a block's params.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effcomp.quant import fake_quant as fq
from effcomp.quant.ptq import blocks as blocks_lib
from effcomp.quant.ptq import lora_rounding

Array = jax.Array
Params = Dict[str, Any]
BlockFn = Callable[[Params, Array, bool], Array]
TARGETS = ("fp", "quant_input")
ROUNDING_INITS = ("offset", "svd")


@dataclasses.dataclass(frozen=True)
class CBQConfig:
  """Cross-block reconstruction settings.

  Attributes:
    window: blocks per window (K).
    overlap: blocks shared by consecutive windows (O < K).
    steps: optimisation steps per window (0: min–max steps, initial rounding).
    lr_step: Adam learning rate of the log step-size ratios θ (s = s₀·exp(θ)).
    lr_round: Adam learning rate of LoRA-Rounding's A₁, A₂ (and gain g).
    rank: LoRA-Rounding's rank r.
    kl_weight: λ_KL.
    round_weight: λ_r, the rounding regulariser's weight.
    beta_start, beta_end, warmup: the regulariser's β schedule (`lora_rounding.beta_schedule`).
    lora_rounding: learn the rounding (else round-to-nearest).
    learn_step: learn the step sizes (else min–max).
    cross_block: sliding windows (else one block at a time, no overlap: the ablation).
    batch_size: calibration samples per step (and per chunk of the forward passes).
    target: 'fp' or 'quant_input' (module docstring).
    rounding_init: 'offset' or 'svd' (module docstring).
    seed: sampling and initialisation seed.
  """
  window: int = 2
  overlap: int = 1
  steps: int = 300
  lr_step: float = 3e-3
  lr_round: float = 1e-1
  rank: int = 8
  kl_weight: float = 1.0
  round_weight: float = 1.0
  beta_start: float = lora_rounding.BETA_START
  beta_end: float = lora_rounding.BETA_END
  warmup: float = lora_rounding.WARMUP
  lora_rounding: bool = True
  learn_step: bool = True
  cross_block: bool = True
  batch_size: int = 8
  target: str = "fp"
  rounding_init: str = "offset"
  seed: int = 0

  def __post_init__(self):
    def expect(ok: bool, field: str, what: str):
      if not ok:
        raise ValueError(f"CBQConfig.{field}={getattr(self, field)!r}: expected {what}")
    expect(self.window >= 1, "window", "≥ 1 blocks")
    expect(0 <= self.overlap < self.window, "overlap", f"0 ≤ overlap < window={self.window}")
    expect(self.steps >= 0, "steps", "≥ 0")
    expect(self.lr_step > 0, "lr_step", "> 0")
    expect(self.lr_round > 0, "lr_round", "> 0")
    expect(self.rank >= 1, "rank", "≥ 1")
    expect(self.kl_weight >= 0, "kl_weight", "≥ 0")
    expect(self.round_weight >= 0, "round_weight", "≥ 0")
    expect(self.beta_end > 0, "beta_end", "> 0")
    expect(self.beta_start >= self.beta_end, "beta_start", f"≥ beta_end={self.beta_end}")
    expect(0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)")
    expect(self.batch_size >= 1, "batch_size", "≥ 1")
    expect(self.target in TARGETS, "target", f"one of {TARGETS}")
    expect(self.rounding_init in ROUNDING_INITS, "rounding_init", f"one of {ROUNDING_INITS}")

  @property
  def window_and_overlap(self) -> Tuple[int, int]:
    return (self.window, self.overlap) if self.cross_block else (1, 0)


class CBQResult(NamedTuple):
  """`params`: per block, the params with kernels replaced by their fake-quant values;
  `scales`: per block, {kernel path: (scale, zero)} in `fake_quant.weight_scale_and_zero`'s
  grouped view (`fake_quant.quantize` of the kernel's view recovers its integer codes);
  `logs`: per window, {'blocks', 'finalized' (the blocks it finalised), 'seconds',
  'rec_init', 'kl_init', 'rec_final', 'kl_final' (ℓ₂ and KL over all samples, hard
  rounding, before/after), 'losses' [steps, 4] (total, ℓ₂, KL, f_reg per step),
  'saturation' (fraction of decided offsets, `lora_rounding.saturation`)}."""
  params: List[Params]
  scales: List[Dict[str, Tuple[Array, Array]]]
  logs: List[Dict[str, Any]]


def windows(num_blocks: int, window: int, overlap: int) -> List[Tuple[int, int]]:
  """[(start, end)) of the sliding windows covering blocks 0 … num_blocks − 1."""
  stride = window - overlap
  out, start = [], 0
  while True:
    end = min(start + window, num_blocks)
    out.append((start, end))
    if end == num_blocks:
      return out
    start += stride


def _step_and_offsets(w: Array, const: Dict[str, Array], learn: Dict[str, Array]):
  """(step size s, LoRA-Rounding's h [in, out] or None) of kernel w [in, out].

  h = h(A₁A₂) ('svd' init), or h(g·V₀(s) + A₁A₂) ('offset' init) with V₀(s) AdaRound's
  init recomputed at the current step (no gradient through it), so that while A₁A₂ = 0
  and g = 1 the soft weight is w itself and the hard rounding is round-to-nearest at s.
  """
  scale = const["scale"] * jnp.exp(learn["log_step"]) if "log_step" in learn else const["scale"]
  scale = _rows(scale, const["group_of_row"])
  if "a1" not in learn:
    return scale, None
  base = None
  if "gain" in learn:
    base = jax.lax.stop_gradient(lora_rounding.base_logits(w, scale))
  return scale, lora_rounding.h(learn["a1"], learn["a2"], base, learn.get("gain"))


def _rows(x: Array, group_of_row: Array) -> Array:
  """A per-group [groups, 1, out] (or [1, 1, 1]) quantity as one row per input row [in, out];
  row r takes group `group_of_row[r]` (groups may be shorter at the end)."""
  return x[group_of_row][:, 0, :]


def _fake_quant_kernel(w: Array, const: Dict[str, Array], learn: Dict[str, Array],
                       spec: fq.QuantSpec, hard: bool) -> Array:
  """Kernel w [in, out] fake-quantized with its (learned) step and rounding."""
  scale, rounding = _step_and_offsets(w, const, learn)
  if rounding is not None and hard:
    rounding = (rounding >= 0.5).astype(jnp.float32)
  zero = _rows(const["zero"], const["group_of_row"])
  return fq.fake_quant_with(w.astype(jnp.float32), scale, zero, spec, rounding).astype(w.dtype)


def _window_offsets(fp_params, consts, learn, paths) -> List[Array]:
  return [_step_and_offsets(blocks_lib.get_path(p, path), c[path], l[path])[1]
          for p, c, l, ps in zip(fp_params, consts, learn, paths) for path in ps if "a1" in l[path]]


def _quantized(params: Params, consts, learn, paths, spec, hard: bool) -> Params:
  for path in paths:
    w = _fake_quant_kernel(blocks_lib.get_path(params, path), consts[path], learn[path], spec, hard)
    params = blocks_lib.set_path(params, path, w)
  return params


def _chain(params: Sequence[Params], x: Array, *, fns, act_quant: bool) -> Array:
  for fn, p in zip(fns, params):
    x = fn(p, x, act_quant)
  return x


def _quant_chain(learn, fp_params, consts, x, *, fns, paths, spec, act_quant, hard):
  params = [_quantized(p, c, l, ps, spec, hard)
            for p, c, l, ps in zip(fp_params, consts, learn, paths)]
  return _chain(params, x, fns=fns, act_quant=act_quant)


_forward = jax.jit(_chain, static_argnames=("fns", "act_quant"))
_quant_forward = jax.jit(_quant_chain,
                         static_argnames=("fns", "paths", "spec", "act_quant", "hard"))


def _loss_terms(out: Array, target: Array) -> Tuple[Array, Array]:
  """(relative squared error, token-mean KL(softmax(target) ‖ softmax(out)))."""
  out, target = out.astype(jnp.float32), target.astype(jnp.float32)
  rec = jnp.mean((out - target) ** 2) / (jnp.mean(target ** 2) + 1e-12)
  log_p, log_q = jax.nn.log_softmax(target, axis=-1), jax.nn.log_softmax(out, axis=-1)
  kl = jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))
  return rec, kl


def _label(key_path, _) -> str:
  return "step" if key_path[-1].key == "log_step" else "round"


@functools.partial(jax.jit, static_argnames=("fns", "paths", "spec", "act_quant", "config"))
def _optimize(learn, fp_params, consts, x, y, key, norm, *, fns, paths, spec, act_quant, config):
  """Adam on the window's θ, A₁, A₂ for `config.steps` steps (one jitted scan)."""
  optimizer = optax.multi_transform(
      {"step": optax.adam(config.lr_step), "round": optax.adam(config.lr_round)},
      lambda tree: jax.tree_util.tree_map_with_path(_label, tree))

  def loss_fn(learn, xb, yb, beta):
    out = _quant_chain(learn, fp_params, consts, xb, fns=fns, paths=paths, spec=spec,
                       act_quant=act_quant, hard=False)
    rec, kl = _loss_terms(out, yb)
    offsets = _window_offsets(fp_params, consts, learn, paths)
    count = sum(o.size for o in offsets)
    reg = sum(lora_rounding.regularizer(o, beta) for o in offsets) / max(count, 1)
    total = (rec + config.kl_weight * kl) / norm + config.round_weight * reg
    return total, (rec, kl, jnp.asarray(reg))

  def step(carry, i):
    learn, opt_state = carry
    idx = jax.random.choice(jax.random.fold_in(key, i), x.shape[0], (config.batch_size,),
                            replace=False)
    beta = lora_rounding.beta_schedule(i, config.steps, config.beta_start, config.beta_end,
                                       config.warmup)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(learn, x[idx], y[idx], beta)
    updates, opt_state = optimizer.update(grads, opt_state, learn)
    return (optax.apply_updates(learn, updates), opt_state), jnp.stack([loss, *aux])

  (learn, _), losses = jax.lax.scan(step, (learn, optimizer.init(learn)), jnp.arange(config.steps))
  return learn, losses


def _in_chunks(fn: Callable[[Array], Array], x: Array, size: int) -> Array:
  return jnp.concatenate([fn(x[i:i + size]) for i in range(0, x.shape[0], size)])


def _window_loss(fn: Callable[[Array], Array], x: Array, y: Array,
                 size: int) -> Tuple[float, float]:
  """`_loss_terms` of fn(x) against y over all samples, in chunks of `size`."""
  err = ref = kl = 0.0
  for i in range(0, x.shape[0], size):
    out, target = fn(x[i:i + size]).astype(jnp.float32), y[i:i + size].astype(jnp.float32)
    err += float(jnp.sum((out - target) ** 2))
    ref += float(jnp.sum(target ** 2))
    kl += float(_loss_terms(out, target)[1]) * out.shape[0]
  return err / max(ref, 1e-30), kl / x.shape[0]


def _check(block_fns, fp_block_params, inputs, config, kernel_paths) -> None:
  if not len(block_fns) == len(fp_block_params) == len(kernel_paths) >= 1:
    raise ValueError(f"block_fns ({len(block_fns)}), fp_block_params ({len(fp_block_params)}) "
                     f"and kernel_paths ({len(kernel_paths)}): expected the same number (≥ 1) "
                     "of blocks")
  if inputs.ndim != 3:
    raise ValueError(f"inputs of shape {inputs.shape}: expected [N, T, E]")
  if config.batch_size > inputs.shape[0]:
    raise ValueError(f"CBQConfig.batch_size={config.batch_size}: expected ≤ the "
                     f"{inputs.shape[0]} calibration samples")
  for i, (params, paths) in enumerate(zip(fp_block_params, kernel_paths)):
    if isinstance(paths, str):
      raise ValueError(f"kernel_paths[{i}]={paths!r}: expected a sequence of paths")
    for path in paths:
      try:
        w = blocks_lib.get_path(params, path)
      except (KeyError, TypeError):
        raise ValueError(f"kernel_paths[{i}]: {path!r} is not a path of block {i}'s "
                         "params") from None
      if getattr(w, "ndim", 0) != 2:
        raise ValueError(f"kernel_paths[{i}]: {path!r} has shape {getattr(w, 'shape', None)}, "
                         "expected a 2-D kernel [in, out]")


def _init_block(params: Params, paths, spec, config: CBQConfig, key):
  """Min–max (scale, zero) and the initial learnables of one block's kernels."""
  consts, learn = {}, {}
  for path in paths:
    w = blocks_lib.get_path(params, path)
    scale, zero = fq.weight_scale_and_zero(w, spec)
    group_size = spec.group_size if spec.granularity == "group" else w.shape[0]
    group_of_row = jnp.minimum(jnp.arange(w.shape[0]) // group_size, scale.shape[0] - 1)
    consts[path], learn[path] = {"scale": scale, "zero": zero, "group_of_row": group_of_row}, {}
    if config.learn_step:
      learn[path]["log_step"] = jnp.zeros_like(scale)
    if config.lora_rounding:
      key, sub = jax.random.split(key)
      offset = config.rounding_init == "offset"
      learn[path]["a1"], learn[path]["a2"] = lora_rounding.init(
          w, _rows(scale, group_of_row), config.rank, sub, method="lora" if offset else "svd")
      if offset:
        learn[path]["gain"] = jnp.ones((1, w.shape[1]), jnp.float32)
  return consts, learn


def _fit_window(fns, fp, consts, learn, paths, x_q, y, key, *, spec, act_quant,
               config: CBQConfig) -> Tuple[List[Any], Dict[str, Any]]:
  """Optimises one window's learnables from the quantized stream x_q towards y."""
  quant_kw = dict(fns=fns, paths=paths, spec=spec, act_quant=act_quant)

  def hard_loss(learned):
    run = lambda x: _quant_forward(learned, fp, consts, x, hard=True, **quant_kw)
    return _window_loss(run, x_q, y, config.batch_size)

  rec_init, kl_init = hard_loss(learn)
  losses = np.zeros((0, 4), np.float32)
  if config.steps and jax.tree_util.tree_leaves(learn):
    norm = max(rec_init + config.kl_weight * kl_init, 1e-12)
    learn, losses = _optimize(learn, fp, consts, x_q, y, key, norm, config=config, **quant_kw)
    losses = np.asarray(losses)
  rec_final, kl_final = hard_loss(learn)
  offsets = _window_offsets(fp, consts, learn, paths)
  saturation = float(np.mean([lora_rounding.saturation(o) for o in offsets])) if offsets else np.nan
  return learn, {"rec_init": rec_init, "kl_init": kl_init, "rec_final": rec_final,
                 "kl_final": kl_final, "losses": losses, "saturation": saturation}


def reconstruct(block_fns: Sequence[BlockFn], fp_block_params: Sequence[Params], inputs: Array,
                config: CBQConfig, qconfig: fq.QuantConfig, *,
                kernel_paths: Sequence[Sequence[str]]) -> CBQResult:
  """Quantizes blocks 0 … L−1 by CBQ's cross-block reconstruction (module docstring).

  Args:
    block_fns: `block_fns[i](block_params, h, act_quant) -> h'` applies block i; with
      act_quant=True it fake-quantizes the inputs of the block's linears per qconfig.act.
    fp_block_params: per block, its full-precision params (nested dicts of arrays).
    inputs: [N, T, E] calibration hidden states entering block 0.
    config: reconstruction settings.
    qconfig: weight quantizer (kernels) and activation quantizer (in `block_fns`).
    kernel_paths: per block, the '/'-joined paths of the kernels to quantize.

  Returns:
    A `CBQResult` (params, scales, logs).
  """
  _check(block_fns, fp_block_params, inputs, config, kernel_paths)
  spec, act_quant, chunk = qconfig.weight, qconfig.act.enabled, config.batch_size
  paths = [tuple(p) if spec.enabled else () for p in kernel_paths]
  plan = windows(len(block_fns), *config.window_and_overlap)
  key = jax.random.PRNGKey(config.seed)
  x_fp = x_q = jnp.asarray(inputs, jnp.float32)  # both streams at the current window's start
  consts: Dict[int, Any] = {}
  learn: Dict[int, Any] = {}
  out_params, out_scales, logs = list(fp_block_params), [{} for _ in block_fns], []
  for w_index, (a, b) in enumerate(plan):
    start = time.perf_counter()
    for i in range(a, b):
      if i not in learn:
        key, sub = jax.random.split(key)
        consts[i], learn[i] = _init_block(fp_block_params[i], paths[i], spec, config, sub)
    fns, fp = tuple(block_fns[a:b]), list(fp_block_params[a:b])
    source = x_fp if config.target == "fp" else x_q
    y = _in_chunks(lambda x: _forward(fp, x, fns=fns, act_quant=False), source, chunk)
    key, sub = jax.random.split(key)
    win_learn, log = _fit_window(fns, fp, [consts[i] for i in range(a, b)],
                                 [learn[i] for i in range(a, b)], tuple(paths[a:b]), x_q, y, sub,
                                 spec=spec, act_quant=act_quant, config=config)
    learn.update(zip(range(a, b), win_learn))
    del y
    end = plan[w_index + 1][0] if w_index + 1 < len(plan) else b  # blocks leaving the window
    for i in range(a, end):
      out_params[i] = _quantized(fp_block_params[i], consts[i], learn[i], paths[i], spec, hard=True)
      out_scales[i] = {p: (consts[i][p]["scale"] * jnp.exp(learn[i][p].get("log_step", 0.0)),
                           consts[i][p]["zero"]) for p in paths[i]}
      fn = (block_fns[i],)
      x_q = _in_chunks(lambda x: _forward([out_params[i]], x, fns=fn, act_quant=act_quant),
                       x_q, chunk)
      if config.target == "fp":
        x_fp = _in_chunks(lambda x: _forward([fp_block_params[i]], x, fns=fn, act_quant=False),
                          x_fp, chunk)
      del learn[i], consts[i]
    jax.block_until_ready(x_q)
    logs.append({"blocks": (a, b), "finalized": (a, end),
                 "seconds": time.perf_counter() - start, **log})
  return CBQResult(out_params, out_scales, logs)
