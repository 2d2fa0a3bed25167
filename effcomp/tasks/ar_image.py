"""Class-conditional autoregressive image generation on a VQ tokenizer's codes (LlamaGen),
with Vision Full-view prompts (VF prompts).

The images of both splits are tokenized once by the frozen tokenizer
`config.task.tokenizer` ('run:<workdir>' of a `vq` run, `IMAGE_TOKENIZERS`; the codes are
cached beside its weights), so training reads code grids, never pixels. The model is
effcomp's `Llama` over one vocabulary: ids [0, K) are the K codes, K + c is class c and
K + num_classes the null class (LlamaGen's `LabelEmbedder` row for classifier-free
guidance), so `vocab_size` ≥ K + num_classes + 1. A training sequence is

    [class, s_1 … s_k, x_1 … x_T]

x: the image's codes in raster order (T = h·w); s: the VF prompt (k = 0 without one). Next-
token cross-entropy is taken on the image tokens (weight 1) and on the prompt tokens with
weight `vf_prompt_weight`; the class token is never a target. With probability
`class_dropout` (LlamaGen: 0.1) the class token is the null class, which classifier-free
guidance (`guided_generate.cfg_logits`) needs at sampling; the model's own dropout
(`Llama.dropout`, `token_dropout`) is active in training. With `rope_2d` on the model, RoPE
positions are (row, column): the class token (0, 0) as LlamaGen's zero-angle class slots,
prompt and image tokens their positions in the code grid.

VF prompts ("Autoregressive Image Generation with Vision Full-view Prompt", Cai et al.,
arXiv 2502.16965; no public code, and the paper's text is not reachable from this machine:
the definition below follows a reading of the paper, each choice a config field):
  * `vf_prompt='class'` (class-specific VF prompt): the codes of another image of the same
    class, a full view of what the class looks like, drawn afresh for every example in
    training (`class_prompts`);
  * `vf_prompt='universal'` (universal VF prompt): codes drawn uniformly from the codebook;
  * `vf_length` k: how many prompt tokens (0: T, the whole grid);
  * `vf_prompt_weight`: 0 (the prompt is context only) or > 0, so the model also learns to
    write the prompt and can generate it itself before the image (`vf_source='generate'`
    at sampling: k more sequential steps; 'data': the prompt is drawn as in training and
    only prefilled, k more tokens in one parallel pass).
Evaluation uses fixed prompts (the first training image of each class; one seeded draw for
'universal'), so its loss is deterministic.

Augmentation (`crops`, LlamaGen's `extract_codes_c2i.py --ten-crop --crop-range 1.1`): the
training images are also tokenized as the 5 (FiveCrop) or 10 (TenCrop, with mirrors)
image_size² crops of the image resized by `crop_range`, and each step takes one crop per
image at random; prompts and evaluation use the plain images.

Evaluation: the image tokens' cross-entropy (`loss`), `perplexity` = exp(loss) and next-
token `accuracy`, with the true class (no dropout).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from effcomp.data.pipeline import ArraySource
from effcomp.models.lm.guided_generate import generate_guided
from effcomp.registry import IMAGE_TOKENIZERS, MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config
from effcomp.tasks.diffusion import to_model_space
from effcomp.tasks.lm import EvalMetrics, masked_mean

VF_PROMPTS = ("none", "class", "universal")
VF_SOURCES = ("data", "generate")


CROPS = (1, 5, 10)


def task_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "ar_image", "tokenizer": "", "image_size": 0, "num_classes": 0,
      "class_dropout": 0.1, "vf_prompt": "none", "vf_length": 0, "vf_prompt_weight": 0.0,
      "crops": 1, "crop_range": 1.1})


def load_tokenizer(c):
  if ":" not in c.tokenizer:
    raise ValueError(f"config.task.tokenizer={c.tokenizer!r}: expected '<kind>:<path>' with "
                     f"kind one of {IMAGE_TOKENIZERS.names()} (e.g. 'run:workdirs/vq_digits')")
  kind, path = c.tokenizer.split(":", 1)
  return IMAGE_TOKENIZERS.get(kind)(path)


def crop_view(x: jax.Array, image_size: int, view: int, crop_range: float) -> jax.Array:
  """View `view` of torchvision's FiveCrop / TenCrop order (top-left, top-right,
  bottom-left, bottom-right, center, then the same of the mirrored image) of `x`
  [B, H, W, C] resized to int(image_size · crop_range), each image_size² (LlamaGen's
  `extract_codes_c2i.py --ten-crop --crop-range 1.1`)."""
  big = int(image_size * crop_range)
  if big <= image_size:
    raise ValueError(f"config.task.crop_range={crop_range}: int(image_size · crop_range) must "
                     f"exceed image_size={image_size}")
  x = jax.image.resize(x, (x.shape[0], big, big, x.shape[3]), "bilinear")
  if view >= 5:
    x, view = x[:, :, ::-1], view - 5
  d, c = big - image_size, (big - image_size) // 2
  y0, x0 = [(0, 0), (0, d), (d, 0), (d, d), (c, c)][view]
  return x[:, y0:y0 + image_size, x0:x0 + image_size]


def tokenized(config, tokenizer, source, split: str, crops: int = 1) -> dict:
  """{'tokens' [N, T] (crops 1) or [N, crops, T], 'label' [N]} of a split, through the
  tokenizer's cache."""
  size, c = config.task.image_size, config.task
  key = f"{config.data.name}_{split}_{size or 'native'}"
  plain = lambda images: to_model_space(jnp.asarray(images), size)
  if crops == 1:
    return tokenizer.tokenize(source, key, plain)
  if not size:
    raise ValueError(f"config.task.crops={crops}: needs config.task.image_size (the crop side)")
  views = [tokenizer.tokenize(source, f"{key}_crop{v}of{crops}_{c.crop_range}",
                              lambda images, v=v: crop_view(plain(images), size, v, c.crop_range))
           for v in range(crops)]
  return {"tokens": np.stack([v["tokens"] for v in views], axis=1), "label": views[0]["label"]}


def class_count(c, train: dict) -> int:
  """`c.num_classes`, or 1 + the largest training label."""
  return c.num_classes or int(train["label"].max()) + 1


def prompt_length(c, num_tokens: int) -> int:
  """k: the VF prompt's tokens (0 without one)."""
  if c.vf_prompt == "none":
    return 0
  return c.vf_length or num_tokens


def class_token(labels, codebook_size: int, num_classes: int, drop=None):
  """Class ids K + label; the null class K + num_classes where `drop`."""
  ids = codebook_size + labels
  return ids if drop is None else jnp.where(drop, codebook_size + num_classes, ids)


def build_sequences(class_ids, prompts, image_tokens):
  """[class, prompt…, image…] [B, 1 + k + T] (prompts [B, k] or None)."""
  parts = [class_ids[:, None]] + ([] if prompts is None else [prompts]) + [image_tokens]
  return jnp.concatenate([p.astype(jnp.int32) for p in parts], axis=1)


def target_weights(prompt_len: int, num_tokens: int, prompt_weight: float) -> np.ndarray:
  """Loss weights of the targets seq[1:]: `prompt_weight` on the k prompt tokens, 1 on the
  T image tokens."""
  return np.concatenate([np.full(prompt_len, prompt_weight, np.float32),
                         np.ones(num_tokens, np.float32)])


def grid_positions(prompt_len: int, num_tokens: int) -> np.ndarray:
  """2-D RoPE positions [1 + k + T, 2]: the class token (0, 0), the prompt's and the image's
  tokens their (row, column) in the square code grid (prompt token i at image position i)."""
  side = int(round(num_tokens ** 0.5))
  if side * side != num_tokens:
    raise ValueError(f"{num_tokens} image tokens: 2-D RoPE needs a square code grid")
  raster = np.stack(np.divmod(np.arange(num_tokens), side), axis=-1)
  return np.concatenate([np.zeros((1, 2), np.int64), raster[:prompt_len], raster]).astype(np.int32)


def class_prompts(labels: np.ndarray, table: dict, length: int, rng: np.random.Generator
                  ) -> np.ndarray:
  """For each label, the first `length` codes of a random `table` image of that class."""
  out = np.empty((len(labels), length), np.int32)
  for i, label in enumerate(labels):
    rows = np.flatnonzero(table["label"] == label)
    if not len(rows):
      raise ValueError(f"class {label}: no image of it to take a class VF prompt from")
    out[i] = table["tokens"][rng.choice(rows), :length]
  return out


def draw_prompts(c, labels, table, length, codebook_size, rng) -> np.ndarray:
  """VF prompts [B, k] for `labels` as training draws them (module docstring)."""
  if c.vf_prompt == "class":
    return class_prompts(np.asarray(labels), table, length, rng)
  return rng.integers(0, codebook_size, (len(labels), length), dtype=np.int32)


def fixed_prompts(c, labels, table, length, codebook_size) -> np.ndarray:
  """The evaluation's deterministic prompts: the first training image of each class, or one
  seeded uniform draw for every row."""
  if c.vf_prompt == "class":
    first = {int(l): int(np.flatnonzero(table["label"] == l)[0]) for l in np.unique(labels)}
    return np.stack([table["tokens"][first[int(l)], :length] for l in labels]).astype(np.int32)
  draw = np.random.default_rng(0).integers(0, codebook_size, length, dtype=np.int32)
  return np.tile(draw, (len(labels), 1))


def check(c, model, codebook_size: int, num_classes: int) -> None:
  if c.vf_prompt not in VF_PROMPTS:
    raise ValueError(f"config.task.vf_prompt={c.vf_prompt!r}: expected one of {VF_PROMPTS}")
  if c.vf_length < 0 or c.vf_prompt_weight < 0 or not 0 <= c.class_dropout < 1:
    raise ValueError(f"config.task.vf_length={c.vf_length}, vf_prompt_weight="
                     f"{c.vf_prompt_weight}, class_dropout={c.class_dropout}: expected ≥ 0, "
                     "≥ 0 and in [0, 1)")
  need = codebook_size + num_classes + 1
  if model.vocab_size < need:
    raise ValueError(f"config.model.vocab_size={model.vocab_size}: expected ≥ {need} (the "
                     f"tokenizer's {codebook_size} codes + {num_classes} classes + the null class)")


@TASKS.register("ar_image")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """An AR image-generation `Task` for the decoder LM `model` (module docstring)."""
  c = task_config(config, task_defaults())
  if teacher_model is not None:
    raise ValueError("config.teacher.workdir is set: the ar_image task trains without a "
                     "teacher (its tokenizer is config.task.tokenizer)")
  if c.crops not in CROPS:
    raise ValueError(f"config.task.crops={c.crops}: expected one of {CROPS}")
  tokenizer = load_tokenizer(c)
  train = tokenized(config, tokenizer, train_source, config.data.train_split)
  evals = tokenized(config, tokenizer, eval_source, config.data.eval_split)
  augmented = (tokenized(config, tokenizer, train_source, config.data.train_split, c.crops)
               if c.crops > 1 else train)
  codebook = tokenizer.codebook_size
  num_classes = class_count(c, train)
  num_tokens = train["tokens"].shape[1]
  k = prompt_length(c, num_tokens)
  if k > num_tokens:
    raise ValueError(f"config.task.vf_length={c.vf_length}: expected ≤ {num_tokens} (the image's "
                     "tokens)")
  check(c, model, codebook, num_classes)
  weights = jnp.asarray(target_weights(k, num_tokens, c.vf_prompt_weight))
  positions = jnp.asarray(grid_positions(k, num_tokens)) if model.rope_2d else None

  def train_transform(batch, rng):
    if c.crops > 1:  # one of the image's crops, at random (LlamaGen's ten-crop codes)
      batch = {**batch, "tokens": batch["tokens"][np.arange(len(batch["tokens"])),
                                                    rng.integers(0, c.crops, len(batch["tokens"]))]}
    if k:
      batch = {**batch, "prompt": draw_prompts(c, batch["label"], train, k, codebook, rng)}
    return batch

  def eval_transform(batch):
    return {**batch, "prompt": fixed_prompts(c, batch["label"], train, k, codebook)}

  def logits_of(params, model_state, batch, drop=None, rng=None):
    """(logits, targets); `rng` given: training (class dropout `drop`, the model's dropout)."""
    seq = build_sequences(class_token(batch["label"], codebook, num_classes, drop),
                          batch.get("prompt"), batch["tokens"])
    inputs = seq[:, :-1]
    pos = None if positions is None else jnp.broadcast_to(positions[:-1], (*inputs.shape, 2))
    logits = model.apply({"params": params, **model_state}, inputs, pos,
                         deterministic=rng is None, rngs=None if rng is None else {"dropout": rng})
    return logits, seq[:, 1:]

  def init_fn(rng, batch):
    inputs = jnp.zeros((1, k + num_tokens), jnp.int32)
    pos = None if positions is None else positions[None, :-1]
    return model.init(rng, inputs, pos)

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del teacher_variables, step
    rng_class, rng_dropout = jax.random.split(rng)
    drop = jax.random.bernoulli(rng_class, c.class_dropout, batch["label"].shape)
    logits, targets = logits_of(params, model_state, batch, drop, rng_dropout)
    w = jnp.broadcast_to(weights, targets.shape)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    image = weights.at[:k].set(0.0) if k else weights
    metrics = {"image_loss": masked_mean(ce, jnp.broadcast_to(image, targets.shape)),
               "accuracy": masked_mean(jnp.argmax(logits, -1) == targets,
                                       jnp.broadcast_to(image, targets.shape))}
    return masked_mean(ce, w), (dict(model_state), metrics)

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del step, teacher_variables
    logits, targets = logits_of(params, model_state, batch)
    logits, targets = logits[:, k:], targets[:, k:]
    return EvalMetrics.single_from_model_output(
        loss=optax.softmax_cross_entropy_with_integer_labels(logits, targets),
        correct=(jnp.argmax(logits, -1) == targets).astype(jnp.float32),
        mask=jnp.broadcast_to(batch["mask"][:, None], targets.shape))

  return Task(model=model, init_fn=init_fn, loss_fn=loss_fn, eval_fn=eval_fn,
              eval_metrics=EvalMetrics, train_source=ArraySource(augmented),
              eval_source=ArraySource(evals),
              train_transform=train_transform if k or c.crops > 1 else None,
              eval_transform=eval_transform if k else None, summary_metric="perplexity")


def sample_codes(model, params, c, labels, rng, *, num_tokens: int, codebook_size: int,
                 num_classes: int, prompts=None, vf_source: str = "data", cfg_scale: float = 1.0,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 use_cache: bool = True):
  """(codes [B, T] of images of `labels`, sequential decoding steps) from a trained model.

  With a VF prompt (`c.vf_prompt`), `vf_source='data'` prefills the given `prompts` [B, k]
  after the class token; 'generate' lets the model write its own prompt first (k more
  steps; needs a model trained with `vf_prompt_weight` > 0). `cfg_scale` ≠ 1 guides the
  logits against the null class (the prompt stays in both halves); ids ≥ K are never drawn.
  """
  if vf_source not in VF_SOURCES:
    raise ValueError(f"vf_source={vf_source!r}: expected one of {VF_SOURCES}")
  k = prompt_length(c, num_tokens)
  if k and vf_source == "generate" and not c.vf_prompt_weight:
    raise ValueError("vf_source='generate': this model never learned to write its VF prompt "
                     "(config.task.vf_prompt_weight=0); use vf_source='data'")
  labels = jnp.asarray(labels)
  given = k and vf_source == "data"
  if given and (prompts is None or prompts.shape != (len(labels), k)):
    raise ValueError(f"prompts: expected [{len(labels)}, {k}] VF prompt tokens for "
                     f"vf_source='data', got {None if prompts is None else prompts.shape}")
  prompt = jnp.asarray(prompts) if given else None
  prefix = build_sequences(class_token(labels, codebook_size, num_classes), prompt,
                           jnp.zeros((len(labels), 0), jnp.int32))
  null = None
  if cfg_scale != 1.0:
    null = build_sequences(class_token(labels, codebook_size, num_classes, True), prompt,
                           jnp.zeros((len(labels), 0), jnp.int32))
  new = num_tokens + (k if k and not given else 0)
  positions = jnp.asarray(grid_positions(k, num_tokens)) if model.rope_2d else None
  codes = generate_guided(model, params, prefix, num_tokens=new, rng=rng, null_prefix=null,
                          cfg_scale=cfg_scale, positions=positions, temperature=temperature,
                          top_k=top_k, top_p=top_p, vocab_limit=codebook_size,
                          use_cache=use_cache)
  return codes[:, -num_tokens:], new


@MODEL_INPUTS.register("ar_image")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """One 8-token sequence (and its 2-D positions with rope_2d): the weights do not depend
  on its length."""
  del config
  tokens = jnp.zeros((1, 8), jnp.int32)
  return (tokens, jnp.zeros((1, 8, 2), jnp.int32)) if model.rope_2d else (tokens,)
