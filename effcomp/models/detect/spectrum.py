"""Spec: a CNN on each image's log amplitude spectrum (Zhang, Karaman & Chang 2019,
"Detecting and Simulating Artifacts in GAN Fake Images").

The transform is the official code's `--feature fft` (ColumbiaDVMM/AutoGAN,
code/GAN_Detection_Train.py, `GANDataset.__getitem__`, lines 204–217; full band,
`--mode 0`): per image and per channel (all three, each on its own),
  im = image / 255                                   (L206–207; here: images in [0, 1])
  F = log(|fft2(im)| + 1e-3)                         (L210–211; natural log)
  F = (F − p5) / (p95 − p5)                          (L212–214; the channel's 5th / 95th
                                                      percentiles, numpy's linear method)
  F = clip((F − 0.5) · 2, −1, 1)                     (L215–217)
with no fftshift (the code shifts only to zero bands in modes 1–3 and shifts back,
L219–236) and no further normalization (`transform_img`, the Normalize(0.5, 0.5) of
L254–257, is never called: L174–177 define it, L241 is commented out). The official
classifier is torchvision's ImageNet-pretrained `resnet34` with a 2-way fc (L418–421,
the default `--model resnet`), on 224×224 center crops of 256×256 images (L194–200),
read by cv2 as BGR (cycleGAN_dataset.py L119): per channel, so only the order of the
output channels differs from RGB input (a converted first conv would reverse its input).

`Spec` = `log_spectrum` → `ResNetBackbone` (torchvision's layout, `detect/resnet.py`) →
Dense head. Its defaults are the official ResNet-34 (basic blocks (3, 4, 6, 3), width
64, 7×7/2 stem + max-pool), randomly initialized (no ImageNet weights here); `SPEC_LITE`
is the CPU-size classifier with the same structure (basic blocks, one per stage, width
16, 3×3/1 stem for 32×32 images).

Input: images [B, H, W, C] float in [0, 1], i.e. the classification task with empty
`task.mean` / `task.std` (the official code takes the spectrum of image / 255). The
percentile normalization makes the spectrum invariant to the images' scale up to the
1e-3 inside the log, so other normalizations change it only slightly.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effcomp.models.detect.resnet import ResNetBackbone
from effcomp.nn.dense import dense
from effcomp.registry import MODELS

LOG_EPS = 1e-3  # GAN_Detection_Train.py L211: np.log(np.abs(fft_img) + 1e-3)
PERCENTILES = (5.0, 95.0)  # L212–213


def log_spectrum(images: jax.Array) -> jax.Array:
  """The official Spec input: images [B, H, W, C] in [0, 1] → [B, H, W, C] float32 in
  [−1, 1], each (image, channel)'s log |2-D DFT| (unshifted: the DC term at [0, 0])
  scaled so its 5th / 95th percentiles map to −1 / 1, then clipped (module docstring)."""
  x = images.astype(jnp.float32)
  spectrum = jnp.log(jnp.abs(jnp.fft.fft2(x, axes=(1, 2))) + LOG_EPS)
  low, high = jnp.percentile(spectrum, jnp.asarray(PERCENTILES), axis=(1, 2), keepdims=True)
  scaled = (spectrum - low) / (high - low)
  return jnp.clip((scaled - 0.5) * 2.0, -1.0, 1.0)


@MODELS.register("spec")
class Spec(nn.Module):
  """`log_spectrum` → ResNet (basic blocks) → Dense; x: [B, H, W, C] in [0, 1] → logits
  [B, num_classes] float32. Defaults: the official ResNet-34; `SPEC_LITE` for CPU runs."""
  num_classes: int = 2
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  small_input: bool = False
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    spectrum = jax.lax.stop_gradient(log_spectrum(x))  # a fixed transform of the data
    pooled, _ = ResNetBackbone(stage_sizes=tuple(self.stage_sizes), width=self.width,
                               block="basic", small_input=self.small_input, dtype=self.dtype,
                               name="backbone")(spectrum.astype(self.dtype), train)
    logits = dense(self.num_classes, "embed", "classes", self.dtype, name="head")(pooled)
    return logits.astype(jnp.float32)


# torchvision's resnet34 with a 2-way fc, the official classifier (L418–421): 21,285,698
# parameters.
SPEC_RESNET34 = dict(stage_sizes=(3, 4, 6, 3), width=64, small_input=False)
# The CPU-size classifier for 32×32 images: the same basic-block ResNet, one block per stage.
SPEC_LITE = dict(stage_sizes=(1, 1, 1, 1), width=16, small_input=True)
