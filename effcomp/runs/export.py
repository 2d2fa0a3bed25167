"""Export a trained binary run to a bit-packed model, and check it against the float one.

`export_and_check` (binary classifiers) opens the newest params and BatchNorm statistics of
a run on one device, packs every binary layer (`effcomp.quant.export`), saves the packed
model, evaluates the packed and the float model on the config's eval split, and times one
eval batch of each (jit, warmed up, median of repeats): the packed model against the float
training graph (`model.apply(train=False)`: binarize the latent weights, float conv).
`export_binary_lm_and_check` packs a 1-bit LM (`effcomp.quant.binary_pack`) and compares
perplexities. Used by `experiments/export.py` and the demo.
"""

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from effcomp import config as config_lib
from effcomp.data import pipeline, sources
from effcomp.quant import binary_pack, export, pack, pack_int
from effcomp.quant.ptq import evaluate
from effcomp.runs import quantize
from effcomp.runs.run import open_run
from effcomp.tasks import classification, lm
from effcomp.train import sharding


def export_and_check(config, workdir: str, output: str, timing_repeats: int = 10) -> dict:
  """Packs the classification run in `workdir` into `output`; returns the summary numbers."""
  config_lib.validate(config)
  if config.task.name != "classification":
    raise ValueError(f"config.task.name={config.task.name!r}: export evaluates classification only")
  mesh = sharding.create_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  run = open_run(workdir, config, mesh=mesh)
  model, variables = run.model, run.variables
  d = config.data
  eval_source = sources.get_source(d.name, d.eval_split, data_dir=d.data_dir, manual_dir=d.manual_dir)
  task_config = config.copy_and_resolve_references()
  if "distill_weight" in task_config.task:
    task_config.task.distill_weight = 0.0  # the teacher plays no part in evaluation
  task = classification.build(task_config, model, eval_source, eval_source)
  inputs = classification.inputs_fn(config)

  batch = pipeline.read_batch(eval_source, [0], task.eval_example_transform)
  x0 = jax.eval_shape(inputs, jnp.asarray(batch["image"]))
  packed = export.pack_model(model, variables, x0)
  if not packed.specs:
    raise ValueError(f"config.model.name={config.model.name!r} has no packable binary layer")
  export.save(packed, output)

  float_fn = jax.jit(lambda v, images: model.apply(v, inputs(images), train=False))
  packed_fn = jax.jit(lambda p, images: export.packed_apply(model, p, inputs(images)))
  n = correct_f = correct_p = agree = 0
  max_diff, timing_images = 0.0, None
  for b in pipeline.eval_batches(eval_source, global_batch_size=config.eval.batch_size,
                                 transform=task.eval_transform,
                                 example_transform=task.eval_example_transform):
    images, mask = jnp.asarray(b["image"]), b["mask"]
    timing_images = images if timing_images is None else timing_images
    lf, lp = np.asarray(float_fn(variables, images)), np.asarray(packed_fn(packed, images))
    pf, pp, labels = lf.argmax(-1)[mask], lp.argmax(-1)[mask], b["label"][mask]
    n += int(mask.sum())
    correct_f += int((pf == labels).sum())
    correct_p += int((pp == labels).sum())
    agree += int((pf == pp).sum())
    max_diff = max(max_diff, float(np.abs(lf - lp)[mask].max()))
  packed_s, float_s = pack.median_times(
      [(packed_fn, (packed, timing_images)), (float_fn, (variables, timing_images))], timing_repeats)
  return dict(examples=n, float_accuracy=correct_f / n, packed_accuracy=correct_p / n,
              agreement=agree / n, max_logit_diff=max_diff, layers=len(packed.specs),
              batch=int(timing_images.shape[0]), packed_s=packed_s, float_s=float_s,
              output=output, **export.size_report(packed, variables))


def export_binary_lm_and_check(workdir: str, output: str) -> dict:
  """Packs the 1-bit LM run in `workdir` (`binary_pack`) into `<output>/model.npz` (plus its
  tokenizer), reloads it, and measures the validation perplexity of the trained model (its
  final 1-bit weights) and of the reloaded packed one (`format_lm_summary`)."""
  src = quantize.lm_source(open_run(workdir), num_samples=1)
  out = epath.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  path = str(out / "model.npz")
  pack_int.save(path, jax.device_get(binary_pack.pack_model(src.model, src.params)))
  (out / lm.TOKENIZER_FILE).write_text(src.tokenizer.to_json())
  packed = pack_int.load(path)
  float_model, float_params = binary_pack.unpack(src.model, packed)
  ppl = lambda m, p: evaluate.perplexity(m, p, src.eval_rows, src.tokenizer.pad_id)
  packed_bytes, float_bytes = binary_pack.nbytes(packed)
  return dict(trained_perplexity=ppl(src.model, src.params),
              packed_perplexity=ppl(float_model, float_params), binarizer=src.model.binarizer,
              packed_bytes=packed_bytes, float_bytes=float_bytes, output=path)


def format_lm_summary(s: dict) -> str:
  return "\n".join([
      "",
      "effcomp 1-bit LM export summary",
      f"  binarizer             {s['binarizer']}",
      f"  trained perplexity    {s['trained_perplexity']:.4f} (final 1-bit weights)",
      f"  packed perplexity     {s['packed_perplexity']:.4f}",
      f"  binarized layers      float32 {s['float_bytes'] / 1e6:.3f} MB, packed "
      f"{s['packed_bytes'] / 1e6:.3f} MB ({s['float_bytes'] / s['packed_bytes']:.1f}x)",
      f"  packed model          {s['output']}",
  ])


def format_summary(s: dict) -> str:
  mb = lambda b: f"{b / 1e6:.3f} MB"
  return "\n".join([
      "",
      "effcomp export summary",
      f"  float accuracy    {s['float_accuracy']:.4f}",
      f"  packed accuracy   {s['packed_accuracy']:.4f}",
      f"  argmax agreement  {s['agreement']:.4f} (of {s['examples']} examples)",
      f"  max |logit diff|  {s['max_logit_diff']:.3g}",
      f"  size              float {mb(s['float_bytes'])}, packed {mb(s['packed_bytes'])} ({s['ratio']:.1f}x)",
      f"  binary layers     {s['layers']}: float {mb(s['binary_float_bytes'])}, packed "
      f"{mb(s['binary_packed_bytes'])} ({s['binary_ratio']:.1f}x)",
      f"  forward (batch {s['batch']}) float {s['float_s'] * 1e3:.2f} ms, packed "
      f"{s['packed_s'] * 1e3:.2f} ms ({s['float_s'] / s['packed_s']:.2f}x)",
      f"  packed model      {s['output']}",
  ])
