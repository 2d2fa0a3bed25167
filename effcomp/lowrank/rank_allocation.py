"""Ranks per layer for a parameter budget: Σ_l r_l (in_l + out_l) ≤ ratio · Σ_l in_l · out_l.

The budget counts the kernels of the factorized linears only (biases, norms and embeddings are
unchanged). Two rules:

  * `uniform_ranks`: every layer keeps the same fraction of its own parameters,
    r_l = int(in·out·ratio/(in+out)) — what SVD-LLM (`SVDLLM.py`, `whitening(ratio)`) and ASVD
    (`SVDLinear.from_linear(param_ratio)`) do per layer.
  * `energy_ranks`: one global threshold on *normalized* singular-value energy. Singular value
    k of layer l scores e_lk = σ_lk² / Σ_j σ_lj² (the fraction of the layer's energy it holds;
    with whitened spectra, of the layer's calibration output energy ‖XW‖²) and costs
    in_l + out_l parameters. Every layer starts at rank 1; then singular values are taken in
    decreasing score, each if it still fits the budget. Within a layer the scores decrease and
    the cost is constant, so a skipped value is never followed by a taken one of the same
    layer: the result is a prefix (a rank) per layer, and layers whose spectra decay slowly
    get more rank. A layer's rank stops at its break-even rank, in·out // (in+out), past which
    the factors would be larger than the kernel.

Normalizing per layer makes layers of different scale comparable (the raw σ² of an MLP kernel
and of a query kernel, or of whitened spectra with different input norms, are not). This is
in the spirit of ASVD's sensitivity-based allocation (`binary_search.py`), with a spectrum
proxy in place of its per-layer perplexity sweep.
"""

from typing import Dict, Mapping, Tuple

import numpy as np

from effcomp.lowrank import svd as svd_lib

Shapes = Mapping[str, Tuple[int, int]]


def dense_count(shapes: Shapes) -> int:
  """Σ in·out over the layers: the parameters of the dense kernels."""
  return sum(svd_lib.dense_params(*s) for s in shapes.values())


def factorized_count(shapes: Shapes, ranks: Mapping[str, int]) -> int:
  """Σ r·(in + out) over the layers: the parameters of their factors."""
  return sum(svd_lib.factorized_params(*shapes[k], ranks[k]) for k in shapes)


def _check_ratio(param_ratio: float, shapes: Shapes) -> int:
  """The budget in parameters; ValueError if it cannot hold rank 1 everywhere."""
  if not shapes:
    raise ValueError("shapes is empty: expected at least one layer")
  if not 0.0 < param_ratio <= 1.0:
    raise ValueError(f"param_ratio={param_ratio}: expected a fraction in (0, 1]")
  budget = int(param_ratio * dense_count(shapes))
  floor = factorized_count(shapes, {k: 1 for k in shapes})
  if budget < floor:
    raise ValueError(f"param_ratio={param_ratio}: {budget} parameters cannot hold rank 1 in every "
                     f"layer ({floor} parameters)")
  return budget


def uniform_ranks(shapes: Shapes, param_ratio: float) -> Dict[str, int]:
  """{layer: int(in·out·ratio/(in+out))}, at least 1 (see the module docstring)."""
  _check_ratio(param_ratio, shapes)
  return {k: svd_lib.ratio_rank(n_in, n_out, param_ratio) for k, (n_in, n_out) in shapes.items()}


def energy_ranks(spectra: Mapping[str, np.ndarray], shapes: Shapes,
                 param_ratio: float) -> Dict[str, int]:
  """Ranks by one global threshold on normalized singular-value energy (module docstring).

  Args:
    spectra: {layer: singular values [min(in, out)], descending} — of W (plain SVD), of
      diag(s)·W (ASVD) or of SᵀW (SVD-LLM).
    shapes: {layer: (in, out)}, the same keys.
    param_ratio: the budget as a fraction of Σ in·out, in (0, 1].
  """
  if set(spectra) != set(shapes):
    raise ValueError(f"spectra and shapes name different layers: "
                     f"{sorted(set(spectra) ^ set(shapes))}")
  budget = _check_ratio(param_ratio, shapes)
  names = sorted(shapes)
  ranks = {k: 1 for k in names}
  used = factorized_count(shapes, ranks)
  scores, owners = [], []
  for i, k in enumerate(names):
    s2 = np.square(np.asarray(spectra[k], np.float64))
    if s2.shape != (min(shapes[k]),):
      raise ValueError(f"spectra[{k!r}] of shape {s2.shape}: expected ({min(shapes[k])},)")
    cap = min(min(shapes[k]), svd_lib.break_even_rank(*shapes[k]))
    energy = s2 / s2.sum() if s2.sum() > 0 else np.zeros_like(s2)
    scores.append(energy[1:cap])  # value 0 is always kept
    owners.append(np.full(cap - 1, i))
  scores, owners = np.concatenate(scores), np.concatenate(owners)
  for j in np.argsort(-scores, kind="stable"):
    k = names[owners[j]]
    cost = sum(shapes[k])
    if used + cost <= budget:
      ranks[k] += 1
      used += cost
  return ranks
