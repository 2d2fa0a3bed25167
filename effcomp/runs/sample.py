"""Sample an opened run: text from a language model, a class grid from a diffusion model.

  texts = sample.texts(runs.open("workdirs/lm_tiny"), ["The for statement"])
  sample.class_grid(runs.open("workdirs/udit_digits"), "samples.png", num_samples=8)
"""

from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from effcomp.models.lm import generate
from effcomp.runs.run import Run
from effcomp.tasks import diffusion, lm


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


def class_grid(run: Run, output: str, *, num_samples: int = 8, guidance_scale: float = 1.0,
               sampler: Optional[str] = None, steps="250", seed: int = 0) -> str:
  """Writes a PNG grid of the diffusion run's samples to `output`, one row per class and
  `num_samples` per row (decoded by its autoencoder in latent mode); returns `output`.
  sampler: None picks the run's default ('ddpm', or 'euler' for a flow model); steps: a
  count or a respacing such as 'ddim25' (`effcomp.diffusion.samplers`)."""
  autoencoder = run.teacher() if run.config.teacher.workdir else None
  labels = jnp.repeat(jnp.arange(run.model.num_classes), num_samples)
  steps = int(steps) if str(steps).isdigit() else steps
  images = diffusion.sample_images(
      run.model, run.params, labels, jax.random.key(seed), config=run.config, sampler=sampler,
      steps=steps, guidance_scale=guidance_scale,
      autoencoder=autoencoder.model if autoencoder else None,
      autoencoder_variables=autoencoder.variables if autoencoder else None)
  grid = diffusion.image_grid(np.asarray(images), rows=run.model.num_classes)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(output)
  return output
