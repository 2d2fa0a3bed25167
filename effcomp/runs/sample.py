"""Sample an opened run: text from a language model, a class grid from a diffusion model or
an autoregressive image model.

  texts = sample.texts(runs.open("workdirs/lm_tiny"), ["The for statement"])
  sample.class_grid(runs.open("workdirs/udit_digits"), "samples.png", num_samples=8)
  sample.class_grid(runs.open("workdirs/ar_digits"), "samples.png", guidance_scale=2.0)
"""

from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from effcomp.data import sources
from effcomp.models.lm import generate
from effcomp.runs.run import Run
from effcomp.tasks import ar_image, diffusion, lm
from effcomp.tasks.base import task_config


def texts(run: Run, prompts: Sequence[str], *, max_new_tokens: int = 100,
          temperature: float = 0.8, top_p: float = 0.95, num_samples: int = 1,
          seed: int = 0) -> List[List[str]]:
  """For each prompt, `num_samples` continuations (the generated text only) of the LM run
  (its tokenizer; KV-cached decoding, `temperature=0` greedy)."""
  if max_new_tokens < 1 or num_samples < 1:
    raise ValueError(f"--max_new_tokens={max_new_tokens}, --num_samples={num_samples}: "
                     "expected ≥ 1")
  tok = lm.load_tokenizer(run.workdir)
  out = []
  for i, prompt in enumerate(prompts):
    ids = [tok.bos_id] + tok.encode(prompt)
    batch = jnp.tile(jnp.asarray(ids, jnp.int32)[None], (num_samples, 1))
    tokens = generate.generate(run.model, run.params, batch, max_new_tokens=max_new_tokens,
                               rng=jax.random.key(seed + i), temperature=temperature,
                               top_p=top_p, eos_id=tok.eos_id, pad_id=tok.pad_id)
    out.append([tok.decode([int(t) for t in row[len(ids):]]) for row in tokens])
  return out


def ar_context(run: Run) -> tuple:
  """(task fields, tokenizer, the training split's codes {'tokens', 'label'}) of an
  `ar_image` run (the codes from the tokenizer's cache)."""
  c = task_config(run.config, ar_image.task_defaults())
  tokenizer = ar_image.load_tokenizer(c)
  d = run.config.data
  train = ar_image.tokenized(run.config, tokenizer, sources.get_source(
      d.name, d.train_split, data_dir=d.data_dir, manual_dir=d.manual_dir), d.train_split)
  return c, tokenizer, train


def ar_codes(run: Run, labels, rng: jax.Array, *, guidance_scale: float = 1.0,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             vf_source: str = "data", use_cache: bool = True, context=None) -> tuple:
  """(codes [B, h, w] of images of `labels`, sequential decoding steps) from an `ar_image`
  run, with its VF prompts (class prompts drawn from the training split's codes,
  `ar_image.draw_prompts`). `context`: `ar_context(run)` when already at hand."""
  c, tokenizer, train = context or ar_context(run)
  num_tokens = train["tokens"].shape[1]
  k = ar_image.prompt_length(c, num_tokens)
  labels = np.asarray(labels)
  prompts = None
  if k and vf_source == "data":
    prompts = ar_image.draw_prompts(c, labels, train, k, tokenizer.codebook_size,
                                    np.random.default_rng(np.asarray(jax.random.key_data(rng))))
  codes, steps = ar_image.sample_codes(
      run.model, run.params, c, labels, rng, num_tokens=num_tokens,
      codebook_size=tokenizer.codebook_size, num_classes=ar_image.class_count(c, train),
      prompts=prompts, vf_source=vf_source, cfg_scale=guidance_scale, temperature=temperature,
      top_k=top_k, top_p=top_p, use_cache=use_cache)
  side = int(round(num_tokens ** 0.5))
  return codes.reshape(len(labels), side, side), steps


def ar_images(run: Run, labels, rng: jax.Array, context=None, **options) -> tuple:
  """(uint8 images [B, H, W, C] of `labels`, sequential decoding steps): `ar_codes` with
  `options`, decoded by the run's tokenizer."""
  context = context or ar_context(run)
  codes, steps = ar_codes(run, labels, rng, context=context, **options)
  return np.asarray(diffusion.to_uint8(context[1].decode(codes))), steps


def sampling_context(run: Run):
  """What sampling a class-conditional image run needs opened once: `ar_context(run)` for
  an `ar_image` run, the frozen autoencoder run of a latent diffusion run, else None."""
  if run.task == "ar_image":
    return ar_context(run)
  return run.teacher() if run.config.teacher.workdir else None


def class_count(run: Run, context=None) -> int:
  """Classes of a class-conditional image run (`diffusion` or `ar_image`)."""
  if run.task == "ar_image":
    context = context or ar_context(run)
    return ar_image.class_count(context[0], context[2])
  return run.model.num_classes


def class_images(run: Run, labels, *, guidance_scale: float = 1.0,
                 sampler: Optional[str] = None, steps="250", seed: int = 0, context=None,
                 **ar_options) -> np.ndarray:
  """uint8 samples [B, H, W, C] of `labels` from a class-conditional image run. Diffusion
  runs: decoded by the autoencoder in latent mode; sampler None picks the run's default
  ('ddpm', or 'euler' for a flow model); steps a count or a respacing such as 'ddim25'
  (`effcomp.diffusion.samplers`). `ar_image` runs: `ar_images` with `ar_options`
  (temperature, top_k, top_p, vf_source). `context`: `sampling_context(run)`, when at hand."""
  if run.task == "ar_image":
    return ar_images(run, labels, jax.random.key(seed), guidance_scale=guidance_scale,
                     context=context, **ar_options)[0]
  autoencoder = context if context is not None else sampling_context(run)
  steps = int(steps) if str(steps).isdigit() else steps
  return np.asarray(diffusion.sample_images(
      run.model, run.params, jnp.asarray(labels), jax.random.key(seed), config=run.config,
      sampler=sampler, steps=steps, guidance_scale=guidance_scale,
      autoencoder=autoencoder.model if autoencoder else None,
      autoencoder_variables=autoencoder.variables if autoencoder else None))


def class_grid(run: Run, output: str, *, num_samples: int = 8, **options) -> str:
  """Writes a PNG grid of the run's samples to `output`, one row per class and
  `num_samples` per row (`class_images` with `options`); returns `output`."""
  context = sampling_context(run)
  count = class_count(run, context)
  images = class_images(run, np.repeat(np.arange(count), num_samples), context=context,
                        **options)
  return _save_grid(images, count, output)


def _save_grid(images: np.ndarray, rows: int, output: str) -> str:
  grid = diffusion.image_grid(images, rows=rows)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(output)
  return output
