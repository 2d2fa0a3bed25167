"""Binary networks: the AdaBin ranking at small scale, and packed 1-bit inference speed.

Part `accuracy` (→ benchmarks/results/bnn.json, docs/results/bnn.md): ResNet-20 and
VGG-small trained on the embedded digits data (upsampled to 16×16) with full precision
and the BNN, XNOR-Net, Bi-Real, ReActNet and AdaBin binarizers, one shared recipe
(`configs/bnn_digits.py`), several seeds; test accuracy mean ± std. The paper's claim
(AdaBin, Tu et al. 2022, Table 3): AdaBin is the best binary method and every binary
network is below full precision.

Part `ablation` (→ benchmarks/results/bnn_ablation.json, docs/results/bnn_ablation.md):
AdaBin ResNet-20 with its pieces swapped, to see which ones decide its rank here.

Part `packed` (→ benchmarks/results/bnn_packed.json, docs/results/bnn_packed.md): packed
XOR+popcount layers vs float32 `jnp.dot` / conv of the same shapes, in one run on this CPU.

  python benchmarks/bnn.py [--part=all|accuracy|packed] [--seeds=3 --steps=400]
"""

import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from effcomp import config as config_lib  # noqa: E402
from effcomp import runs  # noqa: E402
from effcomp.quant import pack  # noqa: E402

flags.DEFINE_enum("part", "all", ["all", "accuracy", "ablation", "packed"], "What to measure.")
flags.DEFINE_integer("seeds", 3, "Seeds per (model, method).")
flags.DEFINE_integer("steps", 400, "Training steps per run.")
flags.DEFINE_list("models", ["resnet20", "vgg_small"], "Architectures.")
flags.DEFINE_list("methods", ["none", "bnn", "xnor", "bireal", "reactnet", "adabin"], "Binarizers.")
FLAGS = flags.FLAGS

NAMES = {"none": "FP (32/32)", "bnn": "BNN", "xnor": "XNOR-Net", "bireal": "Bi-Real",
         "reactnet": "ReActNet", "adabin": "AdaBin"}


def _runs(arg: str, raw: list, **labels):
  """Trains `configs/bnn_digits.py:<arg>` for every seed; returns a row of mean ± std."""
  accs, seconds = [], []
  for seed in range(FLAGS.seeds):
    config = config_lib.load(f"configs/bnn_digits.py:{arg},steps={FLAGS.steps},seed={seed}",
                             **{"train.progress_bar": False})
    with tempfile.TemporaryDirectory() as workdir:
      start = time.time()
      summary = runs.train(config, workdir)
      seconds.append(time.time() - start)
    accs.append(100 * summary["eval"]["accuracy"])
    raw.append({**labels, "arg": arg, "seed": seed, "accuracy": accs[-1], "seconds": seconds[-1]})
    print(f"{arg} seed {seed}: {accs[-1]:.2f}% ({seconds[-1]:.0f} s)", flush=True)
  return {**labels, "top-1 % (mean)": statistics.mean(accs),
          "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
          "seeds": ", ".join(f"{a:.1f}" for a in accs), "s/run": statistics.mean(seconds)}


def accuracy_part():
  rows, raw = [], []
  for model in FLAGS.models:
    for method in FLAGS.methods:
      rows.append(_runs(f"model={model},method={method}", raw, model=model, method=NAMES[method]))
  for model in FLAGS.models:
    binary = [r for r in rows if r["model"] == model and r["method"] != NAMES["none"]]
    fp = [r for r in rows if r["model"] == model and r["method"] == NAMES["none"]]
    order = sorted(binary, key=lambda r: -r["top-1 % (mean)"])
    for rank, r in enumerate(order, 1):
      r["rank among binary"] = rank
    if fp:
      fp[0]["rank among binary"] = "—"
  notes = (f"Embedded digits (1,437 train / 360 test, 8×8 → 16×16), {FLAGS.steps} steps of batch 64, "
           f"Adam 2e-3 cosine (`configs/bnn_digits.py`), {FLAGS.seeds} seeds. Stem, classifier and "
           "downsample shortcuts are full precision in every network (as in the paper); "
           "VGG-small at width 0.25. Paper (CIFAR-10, Table 3): ResNet-20 AdaBin 88.1 % vs "
           "FP 92.1 %; VGG-small AdaBin 92.3 % vs FP 94.1 %, AdaBin above all listed binary methods.")
  write_results("bnn", rows, ("model", "method", "top-1 % (mean)", "std", "rank among binary",
                              "seeds", "s/run"),
                title="Binary networks on digits: AdaBin vs baselines", notes=notes,
                extra={"runs": raw})


ABLATIONS = (
    ("AdaBin as in the paper (Maxout, progressive EDE)", "method=adabin"),
    ("AdaBin, EDE fixed at the code's t=0.1, k=10", "method=adabin,progressive=False"),
    ("AdaBin with identity instead of Maxout", "method=adabin,nonlinearity=identity"),
    ("AdaBin, identity and fixed EDE", "method=adabin,nonlinearity=identity,progressive=False"),
    ("Bi-Real (identity)", "method=bireal"),
    ("Bi-Real with Maxout", "method=bireal,nonlinearity=maxout"),
)


def ablation_part():
  raw = []
  rows = [_runs(f"model=resnet20,{arg}", raw, variant=name) for name, arg in ABLATIONS]
  write_results("bnn_ablation", rows, ("variant", "top-1 % (mean)", "std", "seeds", "s/run"),
                title="Which parts of AdaBin decide its rank on digits (ResNet-20)",
                notes=f"Same recipe as docs/results/bnn.md: {FLAGS.steps} steps, {FLAGS.seeds} seeds.",
                extra={"runs": raw})


def packed_part():
  rows = []
  for batch, k, o in ((64, 1024, 1024), (256, 2048, 2048), (256, 4096, 4096)):
    r = pack.benchmark_dense(batch, k, o, repeats=10)
    rows.append({"layer": f"dense {batch}×{k}→{o}", **r})
  for batch, hw, cin, cout in ((8, 16, 128, 128), (16, 32, 128, 128), (8, 16, 256, 256)):
    r = pack.benchmark_conv(batch, hw, hw, cin, cout, repeats=5)
    rows.append({"layer": f"conv3×3 {batch}×{hw}×{hw}×{cin}→{cout}", **r})
  for r in rows:
    r["size ratio"] = r["float_bytes"] / r["packed_bytes"]
  write_results("bnn_packed", rows, ("layer", "float_s", "packed_s", "speedup", "float_bytes",
                                     "packed_bytes", "size ratio"),
                title="Packed 1-bit layers vs float32 on this CPU",
                notes="Same shapes, one process, jit-compiled, median of repeats after warm-up. "
                      "Weights: packed uint32 bits + per-channel α, β vs float32. Goal: ≥ 3× faster, 32× smaller.")


def main(argv):
  del argv
  if FLAGS.part in ("all", "accuracy"):
    accuracy_part()
  if FLAGS.part in ("all", "ablation"):
    ablation_part()
  if FLAGS.part in ("all", "packed"):
    packed_part()


if __name__ == "__main__":
  app.run(main)
