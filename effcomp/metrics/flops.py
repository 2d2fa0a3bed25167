"""Forward cost of a model: XLA's cost analysis, an exact jaxpr MAC count, and the DiT /
U-DiT papers' analytic GFLOPs.

Conventions (checked in tests/test_flops.py):
  * The papers' "GFLOPs" are multiply-accumulates: a matmul [n, k]·[k, m] costs n·k·m
    ("we use the representation learning literature's convention of counting flops
    effectively as MACs", W. Peebles in facebookresearch/DiT issue #14). XLA's `flops`
    counts a multiply-add as 2 and every elementwise op as 1, so on matmul-dominated
    models XLA ≈ 2 × MACs (CPU, jax 0.10: DiT-S/2 12.21 G = 2.017 × its 6.06 G matmul
    MACs; U-DiT-S 2.06 ×; tiny test models up to 2.2 ×, their elementwise share larger).
  * DiT (Peebles & Xie 2023, Table 4): MACs of every matmul — patch embedding, qkv,
    q·kᵀ, attn·v, projection, MLP, adaLN, timestep MLP, final linear — plus one per
    element of each of the 2·depth + 1 LayerNorm/modulation outputs (T×D). This
    reproduces every published value to its two decimals (XL/2 118.64, L/2 80.71,
    B/2 23.01, S/2 6.06, XL/4 29.05, L/4 19.70, S/4 1.41); the matmuls alone give XL/2
    118.62.
  * U-DiT (Tian et al. 2024, Tables 8 and 10): torchprofile's `profile_macs`, which the
    official repo uses (`utils/test_latency_throughout.py`): MACs of every linear, matmul
    and conv plus one per output element of every `aten::mul` (modulations, gates,
    logit scaling, RoPE's complex products, timestep frequencies); LayerNorms without
    affine and softmax/GELU cost 0. A 'rep' FFN is counted merged (the reference
    profiles `model.eval()`, where the branches are folded), like its parameters in
    Table 8. This reproduces 6.04 / 22.22 / 85.00 and the vanilla 5.91 / 21.96 / 84.48.
All counts are per sample (batch 1), for the latent the model is configured for
(input_size 32 = 256×256 images through the f = 8 VAE).
"""

import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import jaxprs_in_params

from effcomp.models.dit.dit import DIT_SIZES, FREQ_DIM, DiT
from effcomp.models.dit.udit import UDIT_SIZES, UDiT
from effcomp.nn import depthwise_conv
from effcomp.nn.downsampled_attention import parse_downsampler
from effcomp.nn.sparse_block_attention import attention_macs, layer_shift, parse_attention

# Published GFLOPs (MACs) at 256×256, and where each number is printed.
PAPER_GFLOPS: Dict[str, float] = {
    # DiT Table 4 as quoted in U-DiT Table 2 (S/2, B/2, L/2, XL/2, L/4) and Table 1 (S/4);
    # XL/4 from DiT Table 4 as quoted in facebookresearch/DiT issue #47.
    "DiT-S/2": 6.06, "DiT-B/2": 23.01, "DiT-L/2": 80.71, "DiT-XL/2": 118.64,
    "DiT-S/4": 1.41, "DiT-L/4": 19.70, "DiT-XL/4": 29.05,
    # U-DiT Table 8 (all modifications) and Table 10 (vanilla).
    "U-DiT-S": 6.04, "U-DiT-B": 22.22, "U-DiT-L": 85.00,
    "U-DiT-S-vanilla": 5.91, "U-DiT-B-vanilla": 21.96, "U-DiT-L-vanilla": 84.48,
}
# At 512×512 (latent 64×64), U-DiT Table 6 (DiT-XL/2 as replicated and counted by U-DiT).
PAPER_GFLOPS_512: Dict[str, float] = {"DiT-XL/2": 524.7, "U-DiT-B": 106.7}
# Published parameter counts (millions): DiT abstract / Table 4 (XL/2), U-DiT Table 8.
PAPER_PARAMS_M: Dict[str, float] = {"DiT-XL/2": 675.0, "U-DiT-S": 52.05, "U-DiT-B": 204.43,
                                    "U-DiT-L": 810.19}


class MacCount(NamedTuple):
  """Per-sample cost: `matmul` MACs (matmuls and convolutions) + the `elementwise` ops the
  paper's counter adds (module docstring); `total` is the paper's GFLOPs × 1e9."""
  matmul: int
  elementwise: int

  @property
  def total(self) -> int:
    return self.matmul + self.elementwise


def dit_macs(model: DiT) -> MacCount:
  """DiT's analytic cost (module docstring), T = (input_size / patch_size)² tokens; with
  `attention='ssba:<b>'` each layer's q·kᵀ and attn·v count only the pairs its shifted
  blocks compute (`sparse_block_attention.attention_macs`)."""
  p, d, depth = model.patch_size, model.hidden_size, model.depth
  grid = model.input_size // p
  t = grid ** 2
  hidden = int(d * model.mlp_ratio)
  block = 3 * t * d * d + t * d * d + 2 * t * d * hidden + 6 * d * d
  ssba = parse_attention(model.attention)
  attention = sum(attention_macs(grid, grid, d, ssba or None, layer_shift(ssba, i))
                  for i in range(depth))
  embed = t * p * p * model.in_channels * d + FREQ_DIM * d + d * d
  final = 2 * d * d + t * d * p * p * model.out_channels
  return MacCount(depth * block + attention + embed + final, (2 * depth + 1) * t * d)


def udit_macs(model: UDiT) -> MacCount:
  """U-DiT's cost as torchprofile counts the reference in eval mode (module docstring)."""
  model.check()
  h, heads = model.hidden_size, model.num_heads
  kernel, depthwise = parse_downsampler(model.downsampler)
  n1, n2, n3 = model.input_size ** 2, (model.input_size // 2) ** 2, (model.input_size // 4) ** 2
  matmul = n1 * h * model.in_channels * 9  # x_embedder conv3×3
  elementwise = 0
  for w in (h, 2 * h, 4 * h):  # timestep MLPs; t·ω and −log(period)·i are muls
    matmul += FREQ_DIM * w + w * w
    elementwise += FREQ_DIM
  stages = zip(model.stage_channels, model.stage_sizes, model.down_factors, model.depth)
  for c, size, f, blocks in stages:
    n, sub = size * size, f * f
    m, hidden = n // sub, int(c * model.mlp_ratio)
    down = n * c * kernel * kernel * (1 if depthwise else c) if kernel else 0
    attn = down + 3 * n * c * c + 2 * sub * m * m * c + n * c * c
    ffn = 2 * n * c * hidden + (0 if model.ffn == "mlp" else 25 * n * hidden)
    layer_ew = 4 * n * c + sub * heads * m * m + (n * c if model.rope else 0)
    matmul += 2 * blocks * (6 * c * c + attn + ffn)
    elementwise += 2 * blocks * layer_ew
  matmul += (n1 * h // 2 * h * 9 + n2 * h * 2 * h * 9          # down1_2, down2_3
             + n3 * 8 * h * 4 * h * 9 + n2 * 2 * h * 4 * h        # up3_2, reduce_chan_level2
             + n2 * 4 * h * 2 * h * 9 + n1 * 2 * h * 2 * h        # up2_1, reduce_chan_level1
             + n1 * 2 * h * 2 * h * 9                             # output conv3×3
             + 2 * h * 4 * h + n1 * model.out_channels * 2 * h * 9)  # final adaLN, out_proj
  elementwise += n1 * 2 * h  # final modulation
  return MacCount(matmul, elementwise)


def analytic_macs(model: Any) -> MacCount:
  """`dit_macs` or `udit_macs` by the model's type."""
  if isinstance(model, DiT):
    return dit_macs(model)
  if isinstance(model, UDiT):
    return udit_macs(model)
  raise ValueError(f"model={type(model).__name__}: analytic counts exist for DiT and UDiT")


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += out * math.prod(lhs[i] for i in lhs_contract)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      total += out * math.prod(rhs) // rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    subs = [_jaxpr_macs(sub) for sub in jaxprs_in_params(eqn.params)]
    if name == "cond":  # one branch runs
      total += max(subs, default=0)
    else:
      total += sum(subs) * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def jaxpr_macs(fn: Callable, *args, **kwargs) -> int:
  """Exact MACs of the dot_general and conv_general_dilated ops in `fn`'s jaxpr (output
  elements × contracted size), through nested calls; scans count `length` times, a cond
  its largest branch, a while loop one iteration. Depthwise convs are traced as convs
  (`depthwise_conv.auto_impl('conv')`), not as the CPU's shifted multiply-adds."""
  with depthwise_conv.auto_impl("conv"):
    return _jaxpr_macs(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def recipe_cost(net: Any, inputs: Sequence[jax.Array], batch_size: int, steps: int
                ) -> Dict[str, float]:
  """A training recipe's expected cost: 'macs', the `jaxpr_macs` of one forward pass
  `net.apply(variables, *inputs)` (parameters shaped abstractly, nothing allocated), and
  'training_flop' = 3 (forward + backward) × 2 × macs × batch_size × steps."""
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), *inputs))
  macs = jaxpr_macs(lambda v, *a: net.apply(v, *a), variables, *inputs)
  return {"macs": macs, "training_flop": 3 * 2 * macs * batch_size * steps}


def unrolled(model: Any) -> Any:
  """`model` with its layer scans unrolled (`scan_layers=False`: U-DiT, DiT-SR; the same
  parameters): XLA's cost analysis counts a loop body once, whatever its trip count."""
  return model.clone(scan_layers=False) if hasattr(model, "scan_layers") else model


def xla_flops(fn: Callable, *args, **kwargs) -> float:
  """`flops` of XLA's cost analysis of `jax.jit(fn)` compiled for `args` (a multiply-add
  counts 2, elementwise ops 1; on CPU the analysis is a dict, older JAX a list of one).
  A loop body counts once: pass `unrolled(model)`'s apply."""
  cost = jax.jit(fn).lower(*args, **kwargs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  if not cost or "flops" not in cost:
    raise ValueError(f"XLA cost analysis has no 'flops' on {jax.default_backend()}: {cost}")
  return float(cost["flops"])


def example_inputs(model: Any, batch: int = 1):
  """Zero latents [batch, S, S, C], timesteps [batch] and labels [batch] for `model`."""
  s, c = model.input_size, model.in_channels
  return (jnp.zeros((batch, s, s, c), jnp.float32), jnp.zeros((batch,), jnp.int32),
          jnp.zeros((batch,), jnp.int32))


def count_params(model: Any) -> int:
  """Parameters of `model`, from `jax.eval_shape` of its init (nothing is allocated).

  A U-DiT with ffn='rep' is counted in its merged inference form ('dwconv'), as U-DiT's
  Table 8 does. DiT's fixed position embedding is a constant here, not a parameter (the
  reference keeps it as a frozen Parameter: 0.29 M more for DiT-XL/2).
  """
  if isinstance(model, UDiT) and model.ffn == "rep":
    model = model.clone(ffn="dwconv")
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def build(name: str, **overrides: Any):
  """The DiT (`DIT_SIZES`) or U-DiT (`UDIT_SIZES`) size `name`, with field overrides."""
  if name in DIT_SIZES:
    return DiT(**{**DIT_SIZES[name], **overrides})
  if name in UDIT_SIZES:
    return UDiT(**{**UDIT_SIZES[name], **overrides})
  raise ValueError(f"name={name!r}: expected one of {sorted(DIT_SIZES) + sorted(UDIT_SIZES)}")


def flops_table(names: Optional[Sequence[str]] = None, with_params: bool = True,
                input_size: int = 32) -> List[Dict[str, Any]]:
  """Rows {name, params_m, gflops, paper_gflops, paper_params_m} for `names` (default: every
  DiT and U-DiT size) at latent `input_size` (32: 256×256 images, 64: 512×512); paper
  values are None where not published."""
  rows = []
  for name in names or (*DIT_SIZES, *UDIT_SIZES):
    model = build(name, input_size=input_size)
    published = {32: PAPER_GFLOPS, 64: PAPER_GFLOPS_512}.get(input_size, {})
    row = {"name": name, "gflops": analytic_macs(model).total / 1e9,
           "paper_gflops": published.get(name),
           "paper_params_m": PAPER_PARAMS_M.get(name)}
    if with_params:
      row["params_m"] = count_params(model) / 1e6
    rows.append(row)
  return rows


def table_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """A Markdown table of `flops_table` rows."""
  fmt = lambda v, spec: "–" if v is None else format(v, spec)
  lines = ["| model | params (M) | paper | GFLOPs | paper |", "|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['name']} | {fmt(r.get('params_m'), '.2f')} | "
                 f"{fmt(r['paper_params_m'], '.2f')} | {r['gflops']:.2f} | "
                 f"{fmt(r['paper_gflops'], '.2f')} |")
  return "\n".join(lines)
