"""What every system of `benchmarks/interop.py` shares: importing official code from its
repository folder, randomizing a PyTorch model, the output comparison, parameter and MAC
counts on both sides, and interleaved train-step timings.

Official code is imported from `<official_root>/<repo>` only here, in the benchmark (never
by effcomp or its tests): `official_modules(repo_dir, names)` puts the folder first on
`sys.path` and forgets, on the way out, every module it loaded, so two repositories with a
package of the same name (`models`) do not see each other's.
"""

import contextlib
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch.utils.flop_counter import FlopCounterMode

from effcomp.metrics import flops
from effcomp.train import steps

THREADS = 2  # PyTorch threads: the 2 cores of this machine (XLA uses them all as well)
STD = 0.02  # random weights: normal(0, STD) everywhere, so zero-initialized layers count


@contextlib.contextmanager
def official_modules(repo_dir: str) -> Iterator[None]:
  """Imports inside the block resolve against `repo_dir` first; the repository's modules
  are dropped from `sys.modules` afterwards."""
  if not os.path.isdir(repo_dir):
    raise FileNotFoundError(f"--official_root: no folder {repo_dir} (clone the official "
                            "repository there first)")
  sys.path.insert(0, repo_dir)
  try:
    yield
  finally:
    sys.path.remove(repo_dir)
    for name, module in list(sys.modules.items()):
      where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
      if where and os.path.abspath(where).startswith(os.path.abspath(repo_dir) + os.sep):
        del sys.modules[name]


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = STD) -> torch.nn.Module:
  """Every parameter ~ normal(0, std) (BatchNorm running variances ~ 1 + |normal|)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in sorted(module.named_parameters()):
      p.copy_(torch.randn(p.shape, generator=g) * std)
    for name, b in sorted(module.named_buffers()):
      if b.is_floating_point():
        noise = torch.randn(b.shape, generator=g) * std
        b.copy_(1 + noise.abs() if name.endswith("running_var") else noise)
  return module


def state_dict_numpy(module: torch.nn.Module) -> Dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def relative_max_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
  """max |ours − theirs| / max |theirs|: the error relative to the output's scale."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    raise ValueError(f"outputs of shapes {ours.shape} (effcomp) and {theirs.shape} (official)")
  return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def torch_params(module: torch.nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def effcomp_params(variables: Any) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(variables["params"])))


def torch_gmacs(module: torch.nn.Module, *inputs: Any) -> float:
  """Forward multiply-adds per call (`FlopCounterMode` counts a multiply-add as 2 FLOPs),
  in G, for the inputs' batch."""
  with torch.no_grad(), FlopCounterMode(display=False) as counter:
    module(*inputs)
  return counter.get_total_flops() / 2 / 1e9


def effcomp_gmacs(fn: Callable, *args: Any) -> float:
  """Forward multiply-adds of `fn(*args)` from its jaxpr (`effcomp.metrics.flops`), in G."""
  return flops.jaxpr_macs(fn, *args) / 1e9


def as_the_trainer_compiles(step: Callable) -> Callable:
  """The jitted `step`, compiled ahead of its first call as the trainer compiles its train
  step (`effcomp.train.steps.compile_ahead`: the compiler's freed memory handed back)."""
  compiled = []

  def call(*args):
    if not compiled:
      compiled.append(steps.compile_ahead(step, *args))
    return step(*args)
  return call


def adamw_mse_steps(official: torch.nn.Module, model: nn.Module, variables: Any,
                    inputs: Sequence[np.ndarray], out_channels: int
                    ) -> Dict[str, Callable[[], None]]:
  """One train step each side, as no-argument functions {'effcomp', 'torch'}, of a model
  called as f(*inputs) (NHWC float images, integer timesteps / labels) → images: MSE to a
  random target with `out_channels`, AdamW (lr 1e-4, no weight decay: DiT's train.py),
  train mode (dropout, label dropout on). `official` is put in train mode."""
  target = np.random.default_rng(1).normal(
      size=(*inputs[0].shape[:-1], out_channels)).astype(np.float32)
  tx = optax.adamw(1e-4, weight_decay=0.0)

  @as_the_trainer_compiles
  @functools.partial(jax.jit, donate_argnums=(0, 1))  # as the trainer's step
  def step(params, opt_state, key, args, target):
    def loss(p):
      out = model.apply({"params": p}, *args, train=True, rngs={"dropout": key})
      return jnp.mean((out - target) ** 2)
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  integer = [np.issubdtype(a.dtype, np.integer) for a in inputs]
  args = tuple(jnp.asarray(a, jnp.int32) if i else jnp.asarray(a) for a, i in zip(inputs, integer))
  params = jax.tree.map(jnp.copy, variables["params"])  # donated: `variables` stays usable
  state, target_j = [params, tx.init(params)], jnp.asarray(target)

  def effcomp_step():
    state[:] = step(*state, jax.random.key(0), args, target_j)
    jax.block_until_ready(state[0])

  official.train()
  opt = torch.optim.AdamW(official.parameters(), lr=1e-4, weight_decay=0)
  torch_args = [torch.from_numpy(np.asarray(a, np.int64)) if i else nchw(a)
                for a, i in zip(inputs, integer)]
  target_t = nchw(target)

  def torch_step():
    opt.zero_grad()
    torch.nn.functional.mse_loss(official(*torch_args), target_t).backward()
    opt.step()

  return {"effcomp": effcomp_step, "torch": torch_step}


def interleaved_seconds(fns: Dict[str, Callable[[], Any]], repeats: int = 7,
                        warmup: int = 2) -> Dict[str, float]:
  """Median seconds per call of each no-argument function, the calls interleaved (one of
  each per round) so that machine noise hits all alike; each is warmed up first."""
  torch.set_num_threads(THREADS)
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times: Dict[str, List[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def row(system: str, model: str, weights: str, ours: np.ndarray, theirs: np.ndarray, *,
        params: Sequence[int], gmacs: Sequence[float], argmax: bool = False,
        note: str = "", **extra: Any) -> Dict[str, Any]:
  """One result row (the columns of docs/results/interop.md)."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  agree = ""
  if argmax:
    agree = f"{int((ours.argmax(-1) == theirs.argmax(-1)).sum())}/{ours.shape[0]}"
  return {"system": system, "model": model, "weights": weights,
          "max |Δ|": float(np.abs(ours.astype(np.float64) - theirs).max()),
          "max |Δ| / max |y|": relative_max_diff(ours, theirs), "argmax agreement": agree,
          "params (official)": int(params[0]), "params (effcomp)": int(params[1]),
          "GMACs (official)": float(gmacs[0]), "GMACs (effcomp)": float(gmacs[1]),
          "note": note, **extra}


def flat_params(variables: Any) -> Dict[str, Any]:
  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(nn.unbox(variables)).items()}
