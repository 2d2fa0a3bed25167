"""Data upcycling knowledge distillation (DUKD) for super-resolution, and its baselines.

Zhang et al., "Data Upcycling Knowledge Distillation for Image Super-Resolution" (arXiv
2309.14162). Follows the official code, github.com/yun224/DUKD: `models/dukd_model.py`
(`DUKD.optimize_parameters`, `noising`), `models/base_kd_model.py` (`BaseKD`, the output-KD
baseline) and the weights of `options/*/dukd_*.yml`, `options/EDSR/kd_edsr_*.yml`.

With x the LR batch, y its HR batch, S the student, T the frozen teacher and |·|₁ the mean
absolute error over all elements (BasicSR `L1Loss`, reduction 'mean'), one reference
iteration is two optimizer steps:

  step 1, the training pair (`plain_kd_loss`):
    w_pix·|S(x) − y|₁ + w_kd·|S(x) − T(x)|₁
  step 2, the upcycled data (`upcycled_loss`):
    w_kd·|T(t) − F⁻¹(S(F(t)))|₁                    zoom-in + label consistency
    + w_pix·|S(x↓) − x|₁ + w_kd·|S(x↓) − T(x↓)|₁    zoom-out (configs with zoom_out: true)

  t   = zoom-in: `num_tiles` of the s×s non-overlapping LR-sized tiles of y, used as LR
        inputs, so the teacher's outputs T(t) are at s× the GT's resolution (`upcycle_zoom_in`);
  x↓  = zoom-out: x bicubic-downscaled by 1/s, its "HR" being x itself (`upcycle_zoom_out`);
  F   = a random invertible augmentation per tile: each of colour inversion, flip of H, flip
        of W, H↔W transpose, independently with probability 0.3 (`noising`); the student sees
        F(t), its output is mapped back and must match the teacher's output on the clean t —
        the paper's label consistency regularization lives inside the zoom-in KD term.

`dukd_loss` is the sum of both steps, for one gradient step per batch (the paper's
L_rec + λ_kd·L_kd + λ_dukd·L_dukd); a trainer that wants the reference's two updates (step 2
sees the student already updated by step 1) calls `plain_kd_loss` and `upcycled_loss` in turn.

Reference settings (pixel weight w_pix; w_kd = 1 everywhere; Adam 1e-4, 250k iterations):

  config          w_pix  aug prob  tiles  zoom-out
  EDSR ×2/×3/×4     5      0.3     2/1/1    yes
  RCAN ×2/×3/×4   1/2/1   —/0.3/0    1      no/yes/no
  SwinIR ×2/3/4     5      0.3       1      no
  output KD         1       —        —      —       (kd_edsr_x4c256b32_c64b32.yml)

The defaults here are EDSR ×4's (the README's example family): `DUKD_WEIGHTS`,
`AUGMENT_PROB`, one tile, zoom-out on.

`student_fn(x)` / `teacher_fn(x)`: LR-like [B, h, w, 3] in [0, 1] → [B, h·s, w·s, 3]
(e.g. `lambda x: model.apply({'params': p}, x, train=True)` for the student and
`lambda x: model.apply(teacher_vars, x, train=False)` for the teacher). Teacher outputs pass through
`jax.lax.stop_gradient`, so no gradient reaches the teacher (the reference steps only the
student's optimizer). Losses are float32 scalars: the reference averages over every element
of batches whose sizes differ per term (zoom-in has num_tiles·B examples).
"""

import numbers
from typing import Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

SRFn = Callable[[jax.Array], jax.Array]
Metrics = Dict[str, jax.Array]

# Reference `noising` order (ops 'i', 'h', 'v', 't'); bit i of an augmentation code turns op i
# on. 'h' flips dim -2 of NCHW (H), 'v' flips dim -1 (W).
AUGMENT_OPS = ("invert", "flip_h", "flip_w", "transpose")
NUM_AUGMENTS = 2 ** len(AUGMENT_OPS)
AUGMENT_PROB = 0.3  # options/*/dukd_*.yml `train.noisy.prob`

# Each op is an involution, so its own inverse; the table keeps the (forward, inverse) pairs.
_OPS: Dict[str, Tuple[Callable, Callable]] = {
    "invert": (lambda x, r: r - x, lambda x, r: r - x),
    "flip_h": (lambda x, r: jnp.flip(x, -3), lambda x, r: jnp.flip(x, -3)),
    "flip_w": (lambda x, r: jnp.flip(x, -2), lambda x, r: jnp.flip(x, -2)),
    "transpose": (lambda x, r: jnp.swapaxes(x, -3, -2), lambda x, r: jnp.swapaxes(x, -3, -2)),
}

# options/EDSR/dukd_edsr_x4c256b32_c64b32.yml: pixel_opt.loss_weight 5, kd_opt.loss_weight 1.
DUKD_WEIGHTS = {"pix": 5.0, "kd": 1.0, "zoom_in_kd": 1.0, "zoom_out_pix": 5.0, "zoom_out_kd": 1.0}
# options/EDSR/kd_edsr_x4c256b32_c64b32.yml: both weights 1.
PLAIN_KD_WEIGHTS = {"pix": 1.0, "kd": 1.0}
_LR_TERMS = ("pix", "kd")
_UPCYCLED_TERMS = ("zoom_in_kd", "zoom_out_pix", "zoom_out_kd")


def _check_scale(scale: int) -> None:
  if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
    raise ValueError(f"scale={scale!r}: expected a Python int >= 2")


def _check_images(name: str, x: jax.Array) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} of shape {x.shape}: expected [batch, height, width, channels]")


def _check_pair(hr: jax.Array, lr: jax.Array, scale: int) -> None:
  _check_scale(scale)
  _check_images("hr", hr)
  _check_images("lr", lr)
  b, h, w, c = lr.shape
  if hr.shape != (b, h * scale, w * scale, c):
    raise ValueError(f"hr of shape {hr.shape}, lr of shape {lr.shape}: expected hr of shape "
                     f"{(b, h * scale, w * scale, c)} at scale={scale}")


def _check_output(name: str, out: jax.Array, shape: Tuple[int, ...]) -> jax.Array:
  if out.shape != tuple(shape):
    raise ValueError(f"{name} returned shape {out.shape}: expected {tuple(shape)}")
  return out


def _merge_weights(weights: Optional[Mapping[str, float]],
                   defaults: Mapping[str, float]) -> Dict[str, float]:
  merged = dict(defaults)
  if weights is not None:
    unknown = sorted(set(weights) - set(defaults))
    if unknown:
      raise ValueError(f"weights={dict(weights)!r}: unknown keys {unknown}; expected keys "
                       f"among {sorted(defaults)}")
    merged.update(weights)
  return merged


def _weighted_sum(terms: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
  return sum(weights[k] * v for k, v in terms.items())


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean |a − b| over all elements, float32 scalar (BasicSR `L1Loss`, reduction 'mean')."""
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


# ----------------------------------------------------------------------------------------
# Invertible augmentations.

def _check_code(code):
  """A static Python int code in [0, 16), or per-example int codes [batch] as an array."""
  if isinstance(code, numbers.Integral) and not isinstance(code, bool):
    if not 0 <= code < NUM_AUGMENTS:
      raise ValueError(f"code={code}: expected an int in [0, {NUM_AUGMENTS})")
    return int(code)
  code = jnp.asarray(code)
  if code.ndim != 1 or not jnp.issubdtype(code.dtype, jnp.integer):
    raise ValueError(f"code {code.dtype} {code.shape}: expected a Python int or int [batch]")
  return code


def _augment(x: jax.Array, code, img_range: float, inverse: bool) -> jax.Array:
  order = range(len(AUGMENT_OPS))
  if inverse:  # undo the last op first
    order = reversed(order)
  code = _check_code(code)
  if isinstance(code, int):
    for i in order:
      if (code >> i) & 1:
        x = _OPS[AUGMENT_OPS[i]][int(inverse)](x, img_range)
    return x
  _check_images("x", x)
  if code.shape != (x.shape[0],):
    raise ValueError(f"code of shape {code.shape}: expected one code per example, "
                     f"({x.shape[0]},)")
  if x.shape[1] != x.shape[2]:
    raise ValueError(f"x of shape {x.shape}: per-example codes may transpose H and W, which "
                     "needs square images (the reference tiles are square); use a Python "
                     "int code for non-square images")
  for i in order:
    on = ((code >> i) & 1).astype(bool)[:, None, None, None]
    x = jnp.where(on, _OPS[AUGMENT_OPS[i]][int(inverse)](x, img_range), x)
  return x


def apply_augment(x: jax.Array, code, img_range: float = 1.0) -> jax.Array:
  """F_code(x): the ops of `AUGMENT_OPS` whose bit is set in `code`, in that order.

  x: [..., H, W, C] with a Python int code in [0, 16) (any H, W), or [B, H, W, C] with int
  codes [B] (one per example, jittable; needs H == W since a code may transpose).
  Colour inversion is img_range − x (reference `noising`, img_range 1 for [0, 1] images).
  """
  return _augment(x, code, img_range, inverse=False)


def invert_augment(y: jax.Array, code, img_range: float = 1.0) -> jax.Array:
  """F_code⁻¹(y): the same ops in reverse order, so invert_augment(apply_augment(x, k), k) == x.

  Flips and transposes are undone exactly; colour inversion up to float rounding
  (img_range − (img_range − x), exact for dyadic values such as k/256).
  """
  return _augment(y, code, img_range, inverse=True)


def sample_augment_codes(rng: jax.Array, batch: int, prob: float = AUGMENT_PROB) -> jax.Array:
  """int32 codes [batch]: each op on independently with probability `prob` (reference)."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"prob={prob!r}: expected a probability in [0, 1]")
  bits = jax.random.bernoulli(rng, prob, (batch, len(AUGMENT_OPS))).astype(jnp.int32)
  return jnp.sum(bits << jnp.arange(len(AUGMENT_OPS), dtype=jnp.int32), axis=-1)


def random_invertible_augment(rng: jax.Array, x: jax.Array, prob: float = AUGMENT_PROB,
                              img_range: float = 1.0
                              ) -> Tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
  """(F(x), F⁻¹) for per-example random codes; x: [B, H, W, C] with H == W."""
  _check_images("x", x)
  codes = sample_augment_codes(rng, x.shape[0], prob)
  return (apply_augment(x, codes, img_range),
          lambda y: invert_augment(y, codes, img_range))


# ----------------------------------------------------------------------------------------
# Data upcycling.

def upcycle_zoom_in(rng: jax.Array, hr: jax.Array, scale: int, *,
                    num_tiles: int = 1) -> jax.Array:
  """Zoom-in inputs: tiles of the HR patch at the LR patch's size, [num_tiles·B, H/s, W/s, C].

  The HR patch [B, H, W, C] is cut into its s×s grid of non-overlapping (H/s)×(W/s) tiles;
  `num_tiles` distinct grid positions are drawn at random, the same for every example, and
  stacked tile-major along the batch (reference: `np.random.permutation(s**2)[:n_gt_sub]`,
  `torch.cat(..., 0)`; it uses the LR width for both sides, i.e. square patches).
  No resampling: the tiles are HR pixels fed to the networks as if they were LR.
  """
  _check_scale(scale)
  _check_images("hr", hr)
  b, height, width, c = hr.shape
  if height % scale or width % scale:
    raise ValueError(f"hr of shape {hr.shape}: expected height and width divisible by "
                     f"scale={scale}")
  if not 1 <= num_tiles <= scale * scale:
    raise ValueError(f"num_tiles={num_tiles!r}: expected 1 to scale² = {scale * scale}")
  h, w = height // scale, width // scale
  tiles = hr.reshape(b, scale, h, scale, w, c).transpose(1, 3, 0, 2, 4, 5)
  tiles = tiles.reshape(scale * scale, b, h, w, c)  # grid position i·s + j first
  pick = jax.random.permutation(rng, scale * scale)[:num_tiles]
  return tiles[pick].reshape(num_tiles * b, h, w, c)


def upcycle_zoom_out(lr: jax.Array, scale: int, *, clip: bool = False) -> jax.Array:
  """Zoom-out inputs: the LR patch bicubic-downscaled by 1/s, [B, h/s, w/s, C].

  `jax.image.resize(..., 'bicubic', antialias=True)`: Keys cubic (a = −0.5) widened by s,
  as MATLAB's `imresize` — the reference calls BasicSR's MATLAB `imresize(lq, 1/scale)` on
  the CPU (`effcomp.data.imresize` reproduces it, and the data pipeline's LR is made with
  it). Away from the border the two agree to float32 rounding (~1e-7); within 2 output
  pixels of the edge they differ (up to ~0.06 on noise, far less on photographs), since
  JAX renormalises the kernel's in-image weights where MATLAB mirrors the image. This only
  changes the border of an auxiliary input whose target (x, and T(x↓)) is consistent with
  it either way, and keeps the step on device. Not clipped by default, as the reference
  (bicubic may overshoot [0, 1] slightly); `clip=True` clips to [0, 1].
  """
  _check_scale(scale)
  _check_images("lr", lr)
  b, h, w, c = lr.shape
  if h % scale or w % scale:
    raise ValueError(f"lr of shape {lr.shape}: expected height and width divisible by "
                     f"scale={scale} (the student's output on the zoom-out input must match "
                     "the LR patch)")
  out = jax.image.resize(lr, (b, h // scale, w // scale, c), "bicubic", antialias=True)
  return jnp.clip(out, 0.0, 1.0) if clip else out


# ----------------------------------------------------------------------------------------
# Losses: each returns (loss float32 scalar, metrics {term: unweighted scalar, 'loss'}).

def l1_loss(student_fn: SRFn, hr: jax.Array, lr: jax.Array) -> Tuple[jax.Array, Metrics]:
  """No-KD baseline: |S(x) − y|₁ (BasicSR `SRModel` with `pixel_opt` L1, weight 1)."""
  _check_images("hr", hr)
  pix = l1(_check_output("student_fn", student_fn(lr), hr.shape), hr)
  return pix, {"pix": pix, "loss": pix}


def plain_kd_loss(student_fn: SRFn, teacher_fn: SRFn, hr: jax.Array, lr: jax.Array, *,
                  weights: Optional[Mapping[str, float]] = None
                  ) -> Tuple[jax.Array, Metrics]:
  """Output KD: w_pix·|S(x) − y|₁ + w_kd·|S(x) − T(x)|₁ (reference `BaseKD`).

  weights: keys 'pix', 'kd' (default `PLAIN_KD_WEIGHTS`, 1 and 1). This is also step 1 of
  DUKD (with DUKD's pixel weight).
  """
  w = _merge_weights(weights, PLAIN_KD_WEIGHTS)
  _check_images("hr", hr)
  sr = _check_output("student_fn", student_fn(lr), hr.shape)
  sr_t = jax.lax.stop_gradient(_check_output("teacher_fn", teacher_fn(lr), hr.shape))
  terms = {"pix": l1(sr, hr), "kd": l1(sr, sr_t)}
  loss = _weighted_sum(terms, w)
  return loss, {**terms, "loss": loss}


def upcycled_loss(student_fn: SRFn, teacher_fn: SRFn, hr: jax.Array, lr: jax.Array,
                  rng: jax.Array, scale: int, *,
                  weights: Optional[Mapping[str, float]] = None,
                  augment_prob: float = AUGMENT_PROB, num_tiles: int = 1,
                  zoom_out: bool = True, exact_inverse: bool = True
                  ) -> Tuple[jax.Array, Metrics]:
  """DUKD step 2: zoom-in KD with label consistency (+ zoom-out pixel and KD terms).

  hr: [B, h·s, w·s, C], lr: [B, h, w, C] in [0, 1]. weights: keys 'zoom_in_kd',
  'zoom_out_pix', 'zoom_out_kd' (defaults from `DUKD_WEIGHTS`: 1, 5, 1). augment_prob 0
  drops the augmentation (plain zoom-in KD, as RCAN ×2 / ×4); it must then not be traced.
  exact_inverse=False maps the student's output back by applying F again, as the reference
  does (`noising(net_g(noising(t)))`); that equals F⁻¹ except when a transpose meets exactly
  one flip, where it leaves a 180° rotation (~13% of tiles at prob 0.3).
  """
  _check_pair(hr, lr, scale)
  w = _merge_weights(weights, {k: DUKD_WEIGHTS[k] for k in _UPCYCLED_TERMS})
  rng_tiles, rng_aug = jax.random.split(rng)
  tiles = upcycle_zoom_in(rng_tiles, hr, scale, num_tiles=num_tiles)
  out_shape = (tiles.shape[0],) + hr.shape[1:]
  target = jax.lax.stop_gradient(_check_output("teacher_fn", teacher_fn(tiles), out_shape))
  if augment_prob:
    codes = sample_augment_codes(rng_aug, tiles.shape[0], augment_prob)
    undo = invert_augment if exact_inverse else apply_augment
    pred = undo(_check_output("student_fn", student_fn(apply_augment(tiles, codes)),
                              out_shape), codes)
  else:
    pred = _check_output("student_fn", student_fn(tiles), out_shape)
  terms = {"zoom_in_kd": l1(pred, target)}
  if zoom_out:
    lr_lr = upcycle_zoom_out(lr, scale)
    sr = _check_output("student_fn", student_fn(lr_lr), lr.shape)
    sr_t = jax.lax.stop_gradient(_check_output("teacher_fn", teacher_fn(lr_lr), lr.shape))
    terms["zoom_out_pix"] = l1(sr, lr)
    terms["zoom_out_kd"] = l1(sr, sr_t)
  loss = _weighted_sum(terms, w)
  return loss, {**terms, "loss": loss}


def dukd_loss(student_fn: SRFn, teacher_fn: SRFn, hr: jax.Array, lr: jax.Array,
              rng: jax.Array, scale: int, *,
              weights: Optional[Mapping[str, float]] = None,
              augment_prob: float = AUGMENT_PROB, num_tiles: int = 1, zoom_out: bool = True,
              exact_inverse: bool = True) -> Tuple[jax.Array, Metrics]:
  """DUKD: `plain_kd_loss` on (x, y) + `upcycled_loss`, summed for one gradient step.

  weights: any of 'pix', 'kd', 'zoom_in_kd', 'zoom_out_pix', 'zoom_out_kd' (defaults
  `DUKD_WEIGHTS`, EDSR ×4: 5, 1, 1, 5, 1; the reference ties the zoom-out pixel weight to
  'pix' and the zoom-in / zoom-out KD weights to 'kd'). Other arguments: `upcycled_loss`.
  Metrics: each unweighted term, 'lr_loss', 'upcycled_loss' and 'loss'.
  """
  _check_pair(hr, lr, scale)
  w = _merge_weights(weights, DUKD_WEIGHTS)
  lr_loss, lr_terms = plain_kd_loss(student_fn, teacher_fn, hr, lr,
                                    weights={k: w[k] for k in _LR_TERMS})
  up_loss, up_terms = upcycled_loss(
      student_fn, teacher_fn, hr, lr, rng, scale,
      weights={k: w[k] for k in _UPCYCLED_TERMS}, augment_prob=augment_prob,
      num_tiles=num_tiles, zoom_out=zoom_out, exact_inverse=exact_inverse)
  loss = lr_loss + up_loss
  metrics = {k: v for k, v in {**lr_terms, **up_terms}.items() if k != "loss"}
  return loss, {**metrics, "lr_loss": lr_loss, "upcycled_loss": up_loss, "loss": loss}
