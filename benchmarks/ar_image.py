"""Autoregressive image generation with and without VF prompts on the embedded digits.

One VQ tokenizer (`configs/vq_tokenizer.py:data=digits`: LlamaGen's VQGAN at CPU size, 16×16
digits → 4×4 codes of a 256-code ℓ2-normalized codebook) is trained first; its
reconstruction PSNR, codebook usage and perplexity on the test split are reported, and its
reconstructions of the test digits are scored like the samples (the ceiling of every AR
row); the same tokenizer trained with LlamaGen's PatchGAN term is reported beside it. Then
every AR variant (`VARIANTS`: `configs/ar_image.py` arguments) trains the same
Llama (4 layers, width 128, 2-D RoPE) for the same steps and batch from the same seed on
the cached codes, and samples `--samples_per_class` images per class with the KV cache
(temperature 1, no top-k / top-p), unguided and with classifier-free guidance on the
logits. The scores are those of `benchmarks/udit.py` (a CNN trained on the same 16×16
digits; proxy-FID of its penultimate features against the training images — NOT FID — and
the share of samples read as their class), and a diffusion reference (DiT-T/2 with
rectified flow, udit.md's recipe, trained here for `--diffusion_steps`) is scored the same
way. Per row: parameters, forward GMACs per image as run (AR: one pass over the sequence,
× 2 with guidance, plus the VQ decoder; diffusion: steps × one call), sequential steps per
image, and CPU seconds per image (batches of 100, jitted, after a warm-up call).

Paper expectation (Cai et al., arXiv 2502.16965): VF prompts improve the AR model's
generation by about 20 %.

  python benchmarks/ar_image.py [--ar_steps=2000] [--models=…]
"""

import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common, digits_common  # noqa: E402
from benchmarks.digits_common import digits, save_grid, scores  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.metrics import fid, flops, proxy  # noqa: E402
from effcomp.models.lm.llama import num_params  # noqa: E402
from effcomp.runs import sample  # noqa: E402
from effcomp.tasks import ar_image, diffusion, vq  # noqa: E402

flags.DEFINE_string("runs_dir", os.path.join(ROOT, "workdirs", "bench_ar"),
                    "Where the classifier, the tokenizer and the generators train (afresh).")
flags.DEFINE_integer("vq_steps", 1500, "Training steps of the VQ tokenizer (batch 32).")
flags.DEFINE_integer("ar_steps", 2000, "Training steps of every AR model (batch 64).")
flags.DEFINE_integer("diffusion_steps", 1000, "Training steps of the diffusion reference.")
flags.DEFINE_integer("classifier_steps", 400, "Training steps of the proxy classifier.")
flags.DEFINE_integer("samples_per_class", 30, "Samples per class for the scores.")
flags.DEFINE_float("guidance_scale", 2.0, "Classifier-free guidance of the guided columns "
                   "(AR: on the logits, LlamaGen's default 2.0; the diffusion row uses 4, "
                   "udit.md's).")
flags.DEFINE_list("models", ["AR", "AR + class VF", "AR + universal VF",
                             "AR + class VF (generated)"],
                  "AR variants; the first is the baseline of the ratios.")
FLAGS = flags.FLAGS

GUIDED = "class accuracy (guided)"
GUIDED_FID = "proxy-FID (guided)"
# name: (configs/ar_image.py arguments, sampling's vf_source, role)
VARIANTS = {
    "AR": ("vf=none", "data", "LlamaGen-style AR, no prompt"),
    "AR + class VF": ("vf=class", "data", "class VF prompt (another image of the class), "
                      "prefilled"),
    "AR + universal VF": ("vf=universal", "data", "universal VF prompt (random codes), "
                          "prefilled"),
    "AR + class VF (generated)": ("vf=class,vf_weight=1.0", "generate",
                                  "class VF prompt learned too and written by the model first"),
}
DIFFUSION = "DiT-T/2 flow (diffusion reference)"
# (name, role, more configs/vq_tokenizer.py arguments); the first one's codes feed every AR row.
TOKENIZERS = [("VQ", "the AR rows' tokenizer: their ceiling", ""),
              ("VQ + PatchGAN", "LlamaGen's adversarial term on (`gan`)", ",gan")]
COLUMNS = ["model", "role", "params (M)", "GMACs / image", "sequential steps", "eval loss",
           "proxy-FID", "class accuracy", GUIDED_FID, GUIDED, "proxy-FID vs AR", "train copies",
           "NN distance vs test", "CPU s / image", "train min", "samples"]


def _slug(name):
  return (name.lower().replace("+", "").replace("(", "").replace(")", "").replace("/", "_")
          .replace(" ", "_").replace("__", "_"))


def timed(fn, labels):
  """(fn(rng, labels_batch)'s arrays over all `labels`, CPU seconds per image); fn returns
  a tuple of arrays (uint8 samples first)."""
  jax.block_until_ready(fn(jax.random.key(1), labels[:100]))  # compile outside the timing
  start = time.time()
  parts = [tuple(map(np.asarray, fn(jax.random.fold_in(jax.random.key(0), i),
                                    labels[i:i + 100]))) for i in range(0, len(labels), 100)]
  seconds = (time.time() - start) / len(labels)
  return tuple(np.concatenate(p) for p in zip(*parts)), seconds


def nearest_distance(images, reference):
  """Mean over `images` (uint8 [N, 16, 16, 1]) of the RMS pixel distance ([0, 1] scale) to
  the nearest of `reference` (uint8, any size, resized to 16×16 bilinearly as the models see
  the digits)."""
  x = np.asarray(diffusion.to_model_space(jnp.asarray(images), 16)).reshape(len(images), -1)
  r = np.asarray(diffusion.to_model_space(jnp.asarray(reference), 16)).reshape(len(reference),
                                                                                -1)
  d2 = (x * x).sum(1)[:, None] + (r * r).sum(1)[None] - 2 * x @ r.T
  return float(np.mean(np.sqrt(np.maximum(d2.min(1), 0) / x.shape[1]))) / 2


def train_fresh(spec, name):
  """Trains config `spec` from scratch in `--runs_dir/name`: (summary, minutes, opened run)."""
  workdir = os.path.join(FLAGS.runs_dir, name)
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load(spec, **{"train.progress_bar": False})
  start = time.time()
  summary = runs.train(config, workdir)
  return summary, (time.time() - start) / 60, runs.open(workdir, config)


def train_tokenizer(name, role, arg):
  """The VQ run and its row: test PSNR, codebook usage / perplexity, scores of its
  reconstructions (`arg`: more `configs/vq_tokenizer.py` arguments)."""
  summary, minutes, run = train_fresh(
      f"configs/vq_tokenizer.py:data=digits,steps={FLAGS.vq_steps}{arg}", _slug(name))
  params = vq.tokenizer_variables(run.variables)["params"]
  return run, {"model": name, "role": role, "params (M)": num_params(params) / 1e6,
               "psnr": summary["eval"]["psnr"], "usage": summary["eval"]["usage"],
               "perplexity": summary["eval"]["perplexity"], "train min": minutes}


def reconstructions(run, images):
  """uint8 reconstructions by the opened VQ run of 8×8 digits resized to 16×16."""
  x = diffusion.to_model_space(jnp.asarray(images), 16)
  recon = run.model.apply(vq.tokenizer_variables(run.variables), x)[0]
  return np.asarray(diffusion.to_uint8(recon))


def train_ar(name, vq_dir):
  """Trains one AR variant and samples it: (row, samples, guided samples, labels)."""
  args, vf_source, role = VARIANTS[name]
  summary, train_min, run = train_fresh(
      f"configs/ar_image.py:tokenizer={vq_dir},{args},steps={FLAGS.ar_steps}", _slug(name))
  context = sample.ar_context(run)
  c, tokenizer, train = context
  num_tokens = train["tokens"].shape[1]
  length = 1 + ar_image.prompt_length(c, num_tokens) + num_tokens
  pos = jnp.asarray(ar_image.grid_positions(length - 1 - num_tokens, num_tokens))[None]
  ar_macs = flops.jaxpr_macs(lambda p: run.model.apply({"params": p}, jnp.zeros(
      (1, length), jnp.int32), pos), run.params)
  decoder_macs = flops.jaxpr_macs(lambda v: tokenizer.run.model.apply(
      v, jnp.zeros((1, 4, 4), jnp.int32), method="decode_code"), tokenizer.variables)
  labels = np.repeat(np.arange(10), FLAGS.samples_per_class)

  def sampler(scale):
    def fn(rng, y):
      codes, _ = sample.ar_codes(run, y, rng, guidance_scale=scale, vf_source=vf_source,
                                 context=context)
      return diffusion.to_uint8(tokenizer.decode(codes)), codes
    return fn

  (samples, codes), seconds = timed(sampler(1.0), labels)
  (guided, _), _ = timed(sampler(FLAGS.guidance_scale), labels)
  _, steps = sample.ar_codes(run, labels[:2], jax.random.key(0), vf_source=vf_source,
                             context=context)
  seen = {row.astype(np.int32).tobytes() for row in train["tokens"]}
  copies = np.mean([code.astype(np.int32).tobytes() in seen
                    for code in codes.reshape(len(codes), -1)])
  row = {"model": name, "role": role, "params (M)": num_params(run.params) / 1e6,
         "GMACs / image": (ar_macs + decoder_macs) / 1e9, "sequential steps": steps,
         "eval loss": summary["eval"]["loss"], "train copies": float(copies),
         "CPU s / image": seconds, "train min": train_min}
  return row, samples, guided, labels


def train_diffusion():
  """udit.md's DiT-T/2 flow recipe, trained here and sampled with 25 Euler steps."""
  summary, train_min, run = train_fresh(
      "configs/diffusion_digits.py:model=DiT-T/2,objective=flow,steps="
      f"{FLAGS.diffusion_steps}", "dit_flow")
  config = run.config
  labels = np.repeat(np.arange(10), FLAGS.samples_per_class)

  def sampler(scale):
    return lambda rng, y: (diffusion.sample_images(
        run.model, run.params, jnp.asarray(y), rng, config=config, sampler="euler", steps=25,
        guidance_scale=scale),)

  (samples,), seconds = timed(sampler(1.0), labels)
  (guided,), _ = timed(sampler(4.0), labels)
  row = {"model": DIFFUSION, "role": "udit.md's recipe (25 Euler steps; guided: scale 4)",
         "params (M)": flops.count_params(run.model) / 1e6,
         "GMACs / image": 25 * flops.analytic_macs(run.model).total / 1e9,
         "sequential steps": 25, "eval loss": summary["eval"]["loss"], "CPU s / image": seconds,
         "train min": train_min}
  return row, samples, guided, labels


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.models) - set(VARIANTS))
  if unknown:
    raise ValueError(f"--models: unknown {unknown}; expected names of {sorted(VARIANTS)}")
  t_start = time.time()
  accuracy, features_fn, logits_fn = digits_common.train_classifier(
      os.path.join(FLAGS.runs_dir, "classifier"), FLAGS.classifier_steps)
  train_images, _ = digits("train")
  test_images, test_labels = digits("test")
  real_stats = fid.feature_statistics(features_fn(train_images))
  test_distance = nearest_distance(test_images, train_images)
  reference = {"model": "real test images (reference)", "NN distance vs test": 1.0,
               **scores(test_images, test_labels, real_stats, features_fn, logits_fn)}
  grids, tokenizer_rows = {}, []
  for name, role, arg in TOKENIZERS:
    run, row = train_tokenizer(name, role, arg)
    recon = reconstructions(run, test_images)
    row.update(scores(recon, test_labels, real_stats, features_fn, logits_fn))
    path = os.path.join("docs", "results", f"ar_image_recon_{_slug(name)}.png")
    grids[path] = (recon, test_labels)
    row["reconstructions"] = f"[grid]({os.path.basename(path)})"
    tokenizer_rows.append(row)
    print(row, flush=True)
  vq_row = tokenizer_rows[0]
  vq_dir = os.path.join(FLAGS.runs_dir, _slug(TOKENIZERS[0][0]))
  rows = []
  for name, trainer in [(n, lambda n=n: train_ar(n, vq_dir)) for n in FLAGS.models] + [
      (DIFFUSION, train_diffusion)]:
    row, samples, guided, labels = trainer()
    row.update(scores(samples, labels, real_stats, features_fn, logits_fn))
    row["NN distance vs test"] = nearest_distance(samples, train_images) / test_distance
    row[GUIDED_FID] = scores(guided, labels, real_stats, features_fn, logits_fn)["proxy-FID"]
    row[GUIDED] = proxy.class_accuracy(logits_fn, guided, labels)
    path = os.path.join("docs", "results", f"ar_image_samples_{_slug(name)}.png")
    grids[path] = (guided, labels)
    row["samples"] = f"[grid (guided)]({os.path.basename(path)})"
    rows.append(row)
    print(row, flush=True)
  for row in rows:
    row["proxy-FID vs AR"] = row["proxy-FID"] / rows[0]["proxy-FID"]
  notes = (
      f"Embedded digits at 16×16, class-conditional. Tokenizer: `configs/vq_tokenizer.py:"
      f"data=digits` ({FLAGS.vq_steps} steps, batch 32): test PSNR {vq_row['psnr']:.2f} dB, "
      f"codebook usage {vq_row['usage']:.3f} of 256 codes, code perplexity "
      f"{vq_row['perplexity']:.1f}. AR rows: `configs/ar_image.py` (Llama, 4 layers, width "
      f"128, 2-D RoPE, class dropout 0.1, LlamaGen's dropout 0.1 and crop augmentation: the "
      f"codes of 5 crops of each training digit), {FLAGS.ar_steps} steps × 64 images from "
      "seed 0 "
      f"each, then {FLAGS.samples_per_class} samples per class (temperature 1, KV cache); "
      f"guided: classifier-free guidance {FLAGS.guidance_scale:g} on the logits (the VF prompt "
      "in both halves). VF prompts as `effcomp/tasks/ar_image.py` defines them (the paper's "
      "text is not reachable here; its definition follows a reading of arXiv 2502.16965): "
      "class = the 16 codes of another training image of the class, universal = 16 random "
      "codes, both after the class token and unsupervised; '(generated)': the prompt is also "
      "learned (weight 1) and the model writes it before the image (16 more sequential steps). "
      "`eval loss`: the image tokens' cross-entropy on the test split (fixed prompts; "
      "diffusion: its flow loss, another scale). Scores from a CNN trained on the same 16×16 "
      f"digits ({FLAGS.classifier_steps} steps, test accuracy {accuracy:.3f}): `proxy-FID` = "
      "Fréchet distance of its penultimate features, samples vs the training images — a "
      "proxy, NOT comparable with any published FID; `class accuracy` = share of samples the "
      "classifier reads as their conditioning class. Memorization: `train copies` = share of "
      "the unguided AR samples whose codes equal a training image's; `NN distance vs test` = "
      "mean RMS pixel distance of a sample to its nearest training image, over the same for "
      f"the test images ({test_distance:.3f} on [0, 1]): below 1, samples sit closer to the "
      "training set than new digits do. `GMACs / image`: AR, one pass of the "
      "model over the whole sequence plus the VQ decoder (× 2 for the guided model, not "
      "shown); diffusion, 25 calls. `CPU s / image`: unguided, batches of 100, 2 CPU cores. "
      f"Wall time of the whole benchmark: {(time.time() - t_start) / 60:.1f} min.")
  tokenizer_columns = ["model", "role", "params (M)", "psnr", "usage", "perplexity",
                       "proxy-FID", "class accuracy", "train min", "reconstructions"]
  common.write_results(
      "ar_image", [reference] + rows, COLUMNS,
      title="Autoregressive image generation with VF prompts on the embedded digits (CPU scale)",
      notes=notes, extra={"classifier_accuracy": accuracy},
      tables=[("Tokenizer", "The VQ tokenizer every AR row generates codes of (the first), "
               "and the same trained with LlamaGen's PatchGAN term (`gan`: weight 0.5 from "
               f"step {FLAGS.vq_steps // 2}, a 2-layer discriminator of width 32, hinge "
               "losses); their reconstructions of the test digits scored like the samples "
               "(params: the tokenizer's, without the discriminator).", tokenizer_rows,
               tokenizer_columns)])
  for path, (samples, labels) in grids.items():  # after: the record's commit is clean
    save_grid(samples, labels, os.path.join(ROOT, path))


if __name__ == "__main__":
  app.run(main)
