"""Frozen image encoders for perceptual losses (`FEATURE_ENCODERS`) and degradation
scorers for MoR's routing (`DEGRADATION_SCORERS`: 'clip:<folder>', CLIP against antonym
prompt pairs, `effcomp.metrics.clip_iqa`, as MoR scores; 'run:<workdir>', a `degradation`
run's estimator of the pipeline's severities, its CPU-scale stand-in).

  'run:<workdir>'  an effcomp classifier run (e.g. `configs/stand_in_encoder.py`, the
                   rotation-trained CNN that stands in for CLIP at CPU scale): the outputs
                   of its BatchNorm layers (one map per conv) and its penultimate features,
                   in eval mode.
  'clip:<folder>'  a Hugging Face CLIPModel folder (`effcomp.convert.clip.load_clip`), as
                   VPD-SR supervises: the projected image embedding and the vision tower's
                   last hidden state (every token), on images resized to its image_size
                   and normalized (`effcomp.models.clip.preprocess`).

The encoder's weights are closed over by the loss (constants of the jitted step): right for
the stand-in and for CLIP on one host; a pod-scale CLIP would rather be passed in as frozen
state. Images arrive in [−1, 1] and are mapped to [0, 1], what the classification task feeds a
run trained on uint8 images without `mean`/`std`; runs with `task.mean`/`task.std` get
those applied too.
"""

from typing import Callable, List, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.convert.clip import load_clip
from effcomp.data.image_inputs import model_inputs
from effcomp.metrics import clip_iqa, proxy
from effcomp.models import clip
from effcomp.registry import DEGRADATION_SCORERS, FEATURE_ENCODERS
from effcomp.runs.run import open_frozen
from effcomp.tasks import classification
from effcomp.tasks.base import task_config


def _unit_range(images: jax.Array) -> jax.Array:
  """[−1, 1] → [0, 1] float32."""
  return (images.astype(jnp.float32) + 1.0) / 2.0


@FEATURE_ENCODERS.register("run")
def load_run_encoder(workdir: str) -> Callable[[jax.Array], List[jax.Array]]:
  """features_fn(images [B, H, W, 3] in [−1, 1]) → [each BatchNorm output, penultimate]."""
  run, variables = open_frozen(workdir, "classification", f"ess encoder run:{workdir}",
                               "configs/stand_in_encoder.py")
  c = task_config(run.config, classification.task_defaults())

  def features(images):
    x = _unit_range(images)
    if c.mean:
      x = model_inputs(x, 0, tuple(c.mean), tuple(c.std))
    head_input = {}  # the penultimate features, from the same forward pass
    with nn.intercept_methods(proxy.capture_input("head", head_input)):
      _, state = run.model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(
          m, nn.BatchNorm), mutable=["intermediates"])
    maps = [v["__call__"][0] for v in jax.tree_util.tree_leaves(
        state["intermediates"], is_leaf=lambda v: isinstance(v, dict) and "__call__" in v)]
    return maps + [head_input["x"].astype(jnp.float32)]

  return features


@FEATURE_ENCODERS.register("clip")
def load_clip_encoder(folder: str) -> Callable[[jax.Array], List[jax.Array]]:
  """features_fn(images [B, H, W, 3] in [−1, 1]) → [image embeds [B, D], last hidden state
  [B, 1 + patches, hidden]]."""
  model, variables = load_clip(folder)
  size = model.config.vision.image_size

  def features(images):
    pixels = clip.preprocess(_unit_range(images), size)
    embeds, hidden = model.apply(variables, pixels, return_hidden=True,
                                 method=model.encode_image)
    return [embeds, hidden[-1]]

  return features


def clip_tokenizer(folder: str) -> Callable[[Sequence[str]], tuple]:
  """texts → (input_ids, attention_mask) [N, tokens] by the folder's CLIP tokenizer."""
  import transformers  # optional: only CLIP folders need the tokenizer (a test extra)
  tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)

  def tokenize(texts):
    out = tokenizer(list(texts), padding=True, return_tensors="np")
    return out["input_ids"], out["attention_mask"]
  return tokenize


@DEGRADATION_SCORERS.register("run")
def load_run_degradation_scorer(workdir: str) -> Callable[[jax.Array], jax.Array]:
  """scores_fn(y [B, H, W, 3] in [−1, 1]) → severities [B, 4] (blur, noise, JPEG, distortion) by the
  `DegradationEstimator` of a `degradation` run (`configs/degradation_estimator.py`)."""
  run, variables = open_frozen(workdir, "degradation", f"mor_estimator run:{workdir}",
                               "configs/degradation_estimator.py")
  return lambda y: run.model.apply(variables, y.astype(jnp.float32))


@DEGRADATION_SCORERS.register("clip")
def load_clip_degradation_scorer(folder: str, tokenize: Optional[Callable] = None,
                                 prompt_pairs=clip_iqa.PROMPT_PAIRS
                                 ) -> Callable[[jax.Array], jax.Array]:
  """scores_fn(images [B, H, W, 3] in [−1, 1]) → MoR's degradation scores [B, K], K =
  len(prompt_pairs), through CLIP's logit scale (`clip_iqa.relative_scores`); the prompts
  are embedded once here. tokenize: texts → (ids, mask); default the folder's tokenizer."""
  model, variables = load_clip(folder)
  tokenize = tokenize or clip_tokenizer(folder)
  ids, mask = tokenize([text for pair in prompt_pairs for text in pair])
  text = model.apply(variables, jnp.asarray(ids), jnp.asarray(mask), method=model.encode_text)
  positive, negative = text[0::2], text[1::2]
  scale = float(jnp.exp(variables["params"]["logit_scale"]))
  size = model.config.vision.image_size

  def scores(images):
    pixels = clip.preprocess(_unit_range(images), size)
    embeds = model.apply(variables, pixels, method=model.encode_image)
    return clip_iqa.relative_scores(embeds, positive, negative, scale)

  return scores
