"""AdaBin (huawei-noah/Efficient-Computing, BinaryNetworks/AdaBin) against effcomp's binary
ResNets: ResNet-20 1w1a with the released CIFAR-10 checkpoint, ResNet-18 / 34 (ImageNet)
with random weights; the ResNet-20 train step timed on both sides."""

import contextlib
import functools
import importlib
import os
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch

from benchmarks import interop_common as ic
from effcomp import runs
from effcomp.convert import adabin, state_dict

REPO = "Efficient-Computing"
CODE = os.path.join("BinaryNetworks", "AdaBin")
CHECKPOINT = os.path.join(CODE, "cifar10", "checkpoints", "resnet20_1w1a", "model.th")
COMPAT = dict(method="adabin", adabin_act_form="official", progressive=False)


def _official(root: str, dataset: str, module: str, factory: str) -> torch.nn.Module:
  with ic.official_modules(os.path.join(root, REPO, CODE, dataset)):
    return getattr(importlib.import_module(f"nets.{module}"), factory)()


def _effcomp(name: str, tensors: Dict[str, np.ndarray], x: np.ndarray):
  model = runs.build_model(ml_collections.ConfigDict({"name": name, **COMPAT}), "float32")
  template = jax.eval_shape(model.init, jax.random.key(0), x[:1])
  variables, _ = state_dict.from_state_dict(tensors, template, adabin.name_map(model))
  return model, variables


@contextlib.contextmanager
def _cpu_backward():
  """The official `BinaryQuantize.backward` moves k and t with `.cuda()`; on a CPU-only
  machine that is the identity here."""
  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    yield
  finally:
    torch.Tensor.cuda = cuda


def train_steps(official: torch.nn.Module, model, variables, batch: int = 128
                ) -> Dict[str, Callable[[], None]]:
  """One train step each side, as no-argument functions {'effcomp', 'torch'}: cross-entropy,
  SGD (lr 0.1, momentum 0.9, the AdaBin recipe), BatchNorm in training mode, batch of
  32×32×3. The torch step runs the official backward on the CPU (`_cpu_backward`)."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch)
  tx = optax.sgd(0.1, momentum=0.9)

  def loss_fn(params, stats, images, labels):
    logits, new = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                              mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new

  @ic.as_the_trainer_compiles
  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))  # as the trainer's step
  def step(params, stats, opt_state, images, labels):
    (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt_state

  params, stats = jax.tree.map(jnp.copy, (variables["params"], variables["batch_stats"]))
  state = [params, stats, tx.init(params)]  # donated: `variables` stays usable
  images, labels = jnp.asarray(x), jnp.asarray(y)

  def effcomp_step():
    state[:] = step(*state, images, labels)
    jax.block_until_ready(state[0])

  official.train()
  opt = torch.optim.SGD(official.parameters(), lr=0.1, momentum=0.9)
  tx_in, ty = ic.nchw(x), torch.from_numpy(y)

  def torch_step():
    with _cpu_backward():
      opt.zero_grad()
      torch.nn.functional.cross_entropy(official(tx_in), ty).backward()
      opt.step()

  return {"effcomp": effcomp_step, "torch": torch_step}


def _step_ratio(official: torch.nn.Module, model, variables) -> float:
  """Train-step seconds effcomp / PyTorch (`train_steps`, interleaved medians)."""
  seconds = ic.interleaved_seconds(train_steps(official, model, variables))
  return seconds["effcomp"] / seconds["torch"]


def released_resnet20(root: str):
  """(official ResNet-20 1w1a with the released checkpoint, effcomp model, variables)."""
  official = _official(root, "cifar10", "resnet20", "resnet20_1w1a")
  tensors = state_dict.read(os.path.join(root, REPO, CHECKPOINT))
  official.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
  model, variables = _effcomp("bnn_resnet20", tensors, np.zeros((1, 32, 32, 3), np.float32))
  return official, model, variables


def _forward(model):
  return lambda variables, images: model.apply(variables, images, train=False)


def rows(root: str, timing: bool = True) -> List[Dict[str, Any]]:
  out = []
  rng = np.random.default_rng(0)
  # ResNet-20 1w1a, the released checkpoint (CIFAR-10 top-1 88.02 % by its record).
  official = _official(root, "cifar10", "resnet20", "resnet20_1w1a")
  tensors = state_dict.read(os.path.join(root, REPO, CHECKPOINT))
  official.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
  cases = [("ResNet-20 1w1a (CIFAR, 16 × 32²)", "released checkpoint", "bnn_resnet20", official,
            rng.normal(size=(16, 32, 32, 3)).astype(np.float32))]
  # ImageNet ResNet-18 / 34: random weights, 2 images of 224² (its AvgPool2d(7) head).
  for depth in (18, 34):
    cases.append((f"ResNet-{depth} 1w1a (ImageNet, 2 × 224²)", f"random (normal, std {ic.STD})",
                  f"bnn_resnet{depth}",
                  ic.randomize_(_official(root, "imagenet", f"resnet{depth}", f"resnet{depth}_1w1a")),
                  rng.normal(size=(2, 224, 224, 3)).astype(np.float32)))
  for label, weights, name, official, x in cases:
    official.eval()
    model, variables = _effcomp(name, ic.state_dict_numpy(official), x)
    forward = _forward(model)
    with torch.no_grad():
      theirs = official(ic.nchw(x)).numpy()
    note = ("the official count includes bn3 and nonlinear2, which its forward never calls"
            if name != "bnn_resnet20" else "")
    out.append(ic.row("AdaBin", label, weights, forward(variables, x), theirs, argmax=True,
                      params=(ic.torch_params(official), ic.effcomp_params(variables)),
                      gmacs=(ic.torch_gmacs(official, ic.nchw(x[:1])),
                             ic.effcomp_gmacs(forward, variables, x[:1])), note=note))
    if timing and name == "bnn_resnet20":  # last: it trains both models a few steps
      out[-1]["train step effcomp / PyTorch"] = _step_ratio(official, model, variables)
  return out
