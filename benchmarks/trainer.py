"""Trainer overhead and FSDP memory.

1. Throughput: the full trainer (grain data pipeline, host→device batches, metrics,
   NaN guard, logging) against a minimal hand-written `jax.jit` loop that trains the
   same model with the same optimizer on one fixed, already-on-device batch.
   Interleaved repeats in one process; the ratio of medians is reported (goal ≥ 0.95).
2. Memory: parameter + optimizer bytes held by one device with the mesh
   (data=1, fsdp=8) versus (data=8, fsdp=1), on 8 virtual CPU devices
   (goal ≈ 1/8).

  python benchmarks/trainer.py [--repeats=3 --steps=150]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import models, runs  # noqa: E402
from effcomp.data import pipeline, sources  # noqa: E402
from effcomp.tasks import classification  # noqa: E402
from effcomp.train import metrics_writer, sharding  # noqa: E402

flags.DEFINE_integer("repeats", 3, "Interleaved repeats of each loop.")
flags.DEFINE_integer("steps", 150, "Steps per timed run.")
flags.DEFINE_bool("memory_only", False, "Internal: run the memory measurement and print it.")
FLAGS = flags.FLAGS

MODEL = {"widths": (64, 128), "convs_per_stage": 2}
BATCH = 256


def _config(steps):
  return config_lib.load(f"configs/demo.py:steps={steps}", **{
      "model.widths": MODEL["widths"], "model.convs_per_stage": MODEL["convs_per_stage"],
      "train.batch_size": BATCH, "train.progress_bar": False, "train.log_every": 25,
      "train.eval_every": 0, "checkpoint.every_steps": 10 ** 6, "checkpoint.async_save": True})


def trainer_steps_per_second(steps):
  """Steady-state steps/s of `train_and_evaluate` from its own interval timings."""
  with tempfile.TemporaryDirectory() as workdir:
    runs.train(_config(steps), workdir)
    rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  rates = [r["train/steps_per_second"] for r in rows if "train/steps_per_second" in r]
  return statistics.mean(rates[1:])  # the first interval includes compilation


def hand_written_steps_per_second(steps):
  """The same model/optimizer/batch in the plainest loop: jit(step), fixed batch."""
  config = _config(steps)
  model = models.build("cnn", num_classes=10, **MODEL)
  task = classification.build(config, model, None, None)
  source = sources.get_source("digits", "train")
  batch = next(pipeline.train_iterator(source, global_batch_size=BATCH, seed=0,
                                       transform=task.train_transform))
  batch = jax.device_put(batch)
  variables = task.init_fn(jax.random.PRNGKey(0), batch)
  variables = jax.tree.map(lambda x: getattr(x, "value", x), variables,
                           is_leaf=lambda x: hasattr(x, "names"))
  params = variables.pop("params")
  tx = optax.adamw(3e-3, weight_decay=1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, model_state, opt_state, batch, rng):
    (loss, (model_state, _)), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
        params, model_state, batch, rng, None, 0)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state, loss

  rng = jax.random.PRNGKey(1)
  carry = step(params, variables, opt_state, batch, rng)[:3]  # compile
  jax.block_until_ready(carry)
  start = time.perf_counter()
  for _ in range(steps):
    *carry, loss = step(*carry, batch, rng)
  jax.block_until_ready(loss)
  return steps / (time.perf_counter() - start)


def per_device_memory():
  """(fsdp=8 bytes, fsdp=1 bytes, total bytes) of params + optimizer state on device 0."""
  out = {}
  for name, mesh in (("fsdp8", {"data": 1, "fsdp": 8, "tensor": 1}),
                     ("fsdp1", {"data": 8, "fsdp": 1, "tensor": 1})):
    config = _config(10)
    config.unlock()
    config.mesh.update(mesh)
    exp = runs.setup(config)
    tree = (exp.state.params, exp.state.opt_state)
    out[name] = sharding.per_device_bytes(tree)
    out["total"] = sum(x.nbytes for x in jax.tree.leaves(tree))
  return out


def main(argv):
  del argv
  if FLAGS.memory_only:
    print(per_device_memory())
    return
  trainer_rates, hand_rates = [], []
  for _ in range(FLAGS.repeats):
    trainer_rates.append(trainer_steps_per_second(FLAGS.steps))
    hand_rates.append(hand_written_steps_per_second(FLAGS.steps))
  t, h = statistics.median(trainer_rates), statistics.median(hand_rates)

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, __file__, "--memory_only"], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
  memory = eval(result.stdout.strip().splitlines()[-1])  # a dict of ints printed above

  rows = [
      {"measure": "steps/s, trainer (grain data, metrics, guard)", "value": t,
       "runs": ", ".join(f"{r:.2f}" for r in trainer_rates)},
      {"measure": "steps/s, hand-written jax.jit loop (fixed batch)", "value": h,
       "runs": ", ".join(f"{r:.2f}" for r in hand_rates)},
      {"measure": "ratio trainer / hand-written (goal ≥ 0.95)", "value": t / h},
      {"measure": "params+optimizer bytes per device, fsdp=8", "value": memory["fsdp8"]},
      {"measure": "params+optimizer bytes per device, fsdp=1 (data=8)", "value": memory["fsdp1"]},
      {"measure": "ratio fsdp=8 / fsdp=1 (goal ≈ 0.125)", "value": memory["fsdp8"] / memory["fsdp1"]},
  ]
  notes = (f"Model: CNN widths {MODEL['widths']}, {MODEL['convs_per_stage']} convs/stage, "
           f"BatchNorm, AdamW, batch {BATCH} of 8×8 digits; {FLAGS.steps} steps per run, "
           f"{FLAGS.repeats} interleaved runs each, medians compared. Memory on 8 virtual CPU "
           f"devices; total params+optimizer {memory['total']} bytes. Replicated leaves "
           "(BatchNorm scales, optimizer step counters) keep the ratio above 1/8.")
  record = write_results("trainer", rows, ("measure", "value", "runs"),
                         title="Trainer overhead and FSDP memory", notes=notes)
  for row in record["rows"]:
    print(f"{row['measure']:<55} {row['value']:.4g}")


if __name__ == "__main__":
  app.run(main)
