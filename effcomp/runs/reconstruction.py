"""Autoencoder runs side by side: reconstruction quality on their eval split and the cost
of encode + decode, e.g. ElasticDiT's T-DVAE against its teacher.

  row = reconstruction.report("workdirs/tiny_vae_digits")
  rows = reconstruction.compare("workdirs/ae_digits", "workdirs/tiny_vae_digits")

Images are those the `autoencoder` task evaluates on (its crops, resizing and [−1, 1]
scale); each is encoded to its posterior mean and decoded. PSNR and SSIM follow
`effcomp.metrics.image` on the 8-bit images (all channels, no border crop: an autoencoder
has no scale border), averaged over images. Cost: `effcomp.metrics.flops.jaxpr_macs` of
`encode` and of `decode` on one image (multiply-adds of every matmul and conv).
"""

from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from effcomp.data import pipeline, sources
from effcomp.metrics import flops
from effcomp.metrics import image as image_metrics
from effcomp.runs.run import Run, open_run
from effcomp.tasks import autoencoder
from effcomp.tasks.base import task_config
from effcomp.tasks.diffusion import to_model_space, to_uint8


def autoencoder_macs(model: Any, image_shape: Sequence[int]) -> Dict[str, int]:
  """Multiply-adds of `model.encode` on one image of `image_shape` ([H, W, C]) and of
  `model.decode` on its latent: {'encode', 'decode', 'total'}; parameters stay abstract."""
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0),
                                                 "sample": jax.random.key(0)}, x))
  encode = lambda v, x: model.apply(v, x, method="encode")
  mean = jax.eval_shape(encode, variables, x)[0]
  z = jnp.zeros(mean.shape, mean.dtype)
  macs = {"encode": flops.jaxpr_macs(encode, variables, x),
          "decode": flops.jaxpr_macs(lambda v, z: model.apply(v, z, method="decode"),
                                     variables, z)}
  return {**macs, "total": macs["encode"] + macs["decode"]}


def _eval_images(run: Run, max_images: Optional[int]):
  """The run's eval split as its task evaluates it: batches of [−1, 1] images."""
  config = run.config
  if config.task.name != "autoencoder":
    raise ValueError(f"workdir={run.workdir!r}: task {config.task.name!r}, expected an "
                     "'autoencoder' run")
  c = task_config(config, autoencoder.task_defaults())
  d = config.data
  source = sources.get_source(d.name, d.eval_split, data_dir=d.data_dir,
                              manual_dir=d.manual_dir)
  seen = 0
  for batch in pipeline.eval_batches(
      source, global_batch_size=config.eval.batch_size,
      example_transform=autoencoder.example_transforms(c)["eval_example_transform"]):
    mask = np.asarray(batch["mask"])
    if max_images is not None:
      mask &= np.arange(mask.size) < max_images - seen
    if not mask.any():
      return
    seen += int(mask.sum())
    yield to_model_space(jnp.asarray(batch["image"]), c.image_size)[mask]


def report(workdir: str, *, max_images: Optional[int] = None) -> Dict[str, Any]:
  """Reconstruction PSNR / SSIM (dB, 8-bit) of the autoencoder run in `workdir` over (the
  first `max_images` of) its eval split, and its cost per image (module docstring)."""
  run = open_run(workdir)
  reconstruct = jax.jit(lambda x: run.model.apply(run.variables, x, sample_posterior=False)[0])
  psnrs, ssims, shape = [], [], None
  for x in _eval_images(run, max_images):
    shape = x.shape[1:]
    originals, recons = np.asarray(to_uint8(x)), np.asarray(to_uint8(reconstruct(x)))
    for a, b in zip(recons, originals):
      psnrs.append(image_metrics.psnr(a, b, 0, test_y_channel=False))
      ssims.append(image_metrics.ssim(a, b, 0, test_y_channel=False))
  if shape is None:
    raise ValueError(f"workdir={workdir!r}: its eval split has no images")
  macs = autoencoder_macs(run.model, shape)
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(run.params))
  return {"workdir": workdir, "model": run.config.model.name, "images": len(psnrs),
          "image_shape": list(shape), "params": params, "encode_macs": macs["encode"],
          "decode_macs": macs["decode"], "gmacs": macs["total"] / 1e9,
          "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def compare(teacher_workdir: str, *workdirs: str, max_images: Optional[int] = None
            ) -> list:
  """`report` of the teacher and of each other run, each row with 'macs_ratio' (its
  encode + decode multiply-adds over the teacher's) and 'psnr_gap' (its PSNR − the
  teacher's, dB)."""
  rows = [report(w, max_images=max_images) for w in (teacher_workdir, *workdirs)]
  for row in rows:
    row["macs_ratio"] = row["gmacs"] / rows[0]["gmacs"]
    row["psnr_gap"] = row["psnr"] - rows[0]["psnr"]
  return rows
