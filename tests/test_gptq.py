"""GPTQ (Frantar et al. 2023): beats RTN on correlated inputs, reduces to RTN for H = I,
stays on its grid, and matches a torch port of the reference `GPTQ.fasterquant`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.quant import fake_quant as fq
from effcomp.quant.ptq import gptq, hessian

LARGE_CHANNELS = (3, 50, 100)  # inputs 20x larger than the rest, as LLM outlier features
_rtn = jax.jit(fq.quantize_weight, static_argnums=1)  # one compile, not one per eager op


def _correlated_layer(n_in=256, n_out=128, n_tokens=1024, seed=0):
  """(x [tokens, in], w [in, out]) with x = z·A mixed by a random A, plus large channels."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n_tokens, n_in))
  x = z @ (rng.standard_normal((n_in, n_in)) / np.sqrt(n_in))
  x[:, [c for c in LARGE_CHANNELS if c < n_in]] *= 20.0
  w = 0.05 * rng.standard_normal((n_in, n_out))
  return x.astype(np.float32), w.astype(np.float32)


def _output_error(x, w, w_hat):
  """‖X W − X Ŵ‖² in float64."""
  delta = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.sum(np.square(np.asarray(x, np.float64) @ delta)))


def _spec(name):
  return fq.QuantConfig.parse(name).weight


def _requantize(w_hat, info, spec):
  """fake_quant of w_hat with the returned scales, each row with its group's."""
  scale = np.asarray(info["scale"])[np.asarray(info["g_idx"]), 0]
  zero = np.asarray(info["zero"])[np.asarray(info["g_idx"]), 0]
  return np.asarray(fq.fake_quant_with(jnp.asarray(w_hat), scale, zero, spec))


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("setting", ["w4a16", "w3a16g64", "w2a16g64"])
def test_gptq_output_error_is_below_rtn_on_correlated_inputs(setting, act_order):
  x, w = _correlated_layer()
  spec = _spec(setting)
  w_hat, info = gptq.gptq_quantize(w, hessian.from_inputs(x), spec, act_order=act_order)
  ratio = _output_error(x, w, w_hat) / _output_error(x, w, _rtn(w, spec))
  print(f"{setting} act_order={act_order}: GPTQ/RTN output error {ratio:.3f}")
  assert ratio < 0.8
  assert np.isfinite(info["error"])


def test_error_is_the_damped_quadratic_objective():
  """Σ OBQ losses = ½ ΣΔwᵀ(H + λI)Δw = ‖XΔW‖²/N + λ/2‖ΔW‖² at the end (OBS bookkeeping)."""
  x, w = _correlated_layer()
  h = hessian.from_inputs(x)
  damp = 0.01
  w_hat, info = gptq.gptq_quantize(w, h, _spec("w3a16g64"), damp=damp)
  lam = damp * np.mean(np.diag(np.asarray(h, np.float64)))
  delta = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  objective = _output_error(x, w, w_hat) / len(x) + lam / 2 * np.sum(delta ** 2)
  np.testing.assert_allclose(info["error"], objective, rtol=2e-3)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("setting", ["w4a16", "w3a16g64", "w2a16g32_sym"])
def test_identity_hessian_gives_rtn_exactly(setting, act_order):
  _, w = _correlated_layer()
  spec = _spec(setting)
  w_hat, _ = gptq.gptq_quantize(w, np.eye(len(w), dtype=np.float32), spec, act_order=act_order)
  np.testing.assert_array_equal(np.asarray(w_hat), np.asarray(_rtn(w, spec)))


def test_identity_hessian_per_tensor_gives_rtn_exactly():
  _, w = _correlated_layer()
  spec = fq.QuantSpec(4, False, "tensor")
  w_hat, info = gptq.gptq_quantize(w, np.eye(len(w)), spec)
  np.testing.assert_array_equal(np.asarray(w_hat), np.asarray(_rtn(w, spec)))
  assert info["scale"].shape == (1, 1, 1)


@pytest.mark.parametrize("act_order,static_groups", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("setting", ["w4a16", "w3a16g64"])
def test_w_hat_lies_on_its_quantization_grid(setting, act_order, static_groups):
  if static_groups and "g" not in setting:
    pytest.skip("static groups need a group size")
  x, w = _correlated_layer()
  spec = _spec(setting)
  w_hat, info = gptq.gptq_quantize(w, hessian.from_inputs(x), spec, act_order=act_order,
                                   static_groups=static_groups)
  w_hat = np.asarray(w_hat)
  assert w_hat.dtype == np.float32 and w_hat.shape == w.shape
  np.testing.assert_array_equal(_requantize(w_hat, info, spec), w_hat)
  groups = len(w) // spec.group_size if spec.group_size else 1
  assert info["scale"].shape == info["zero"].shape == (groups, 1, w.shape[1])
  if not act_order or static_groups:  # groups are consecutive rows: fake_quant's own layout
    np.testing.assert_array_equal(np.asarray(info["g_idx"]),
                                  np.arange(len(w)) // (spec.group_size or len(w)))
    view = w_hat.reshape(groups, -1, w.shape[1])
    np.testing.assert_array_equal(
        np.asarray(fq.fake_quant_with(view, info["scale"], info["zero"], spec)), view)
  else:  # each group holds group_size rows, but not consecutive ones
    assert sorted(np.bincount(np.asarray(info["g_idx"]))) == [spec.group_size or len(w)] * groups


def test_dead_inputs_get_zero_rows_and_do_not_break_the_rest():
  x, w = _correlated_layer()
  dead = [7, 130, 131]
  x[:, dead] = 0.0
  h = hessian.from_inputs(x)
  assert np.all(np.diag(np.asarray(h))[dead] == 0)
  spec = _spec("w3a16g64")
  for act_order in (False, True):
    w_hat, info = gptq.gptq_quantize(w, h, spec, act_order=act_order)
    w_hat = np.asarray(w_hat)
    assert np.all(np.isfinite(w_hat)) and np.isfinite(info["error"])
    np.testing.assert_array_equal(w_hat[dead], 0.0)
    assert _output_error(x, w, w_hat) < _output_error(x, w, _rtn(w, spec))


def test_hessian_update_is_two_over_n_xtx_across_uneven_batches():
  rng = np.random.default_rng(1)
  batches = [rng.standard_normal(shape).astype(np.float32)
             for shape in [(3, 24), (17, 24), (2, 5, 24), (0, 24), (41, 24)]]
  state = hessian.init(24)
  step = jax.jit(hessian.update)
  for batch in batches:
    state = step(state, jnp.asarray(batch))
  rows = np.concatenate([b.reshape(-1, 24) for b in batches]).astype(np.float64)
  assert int(state.count) == len(rows) == 71
  np.testing.assert_allclose(np.asarray(state.hessian), 2 / len(rows) * rows.T @ rows,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(hessian.from_inputs(jnp.asarray(rows, jnp.float32))),
                             np.asarray(state.hessian), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(hessian=np.eye(5)), "hessian of shape"),
    (dict(spec=fq.QuantSpec(16)), "spec.bits"),
    (dict(static_groups=True), "static_groups"),
    (dict(block_size=0), "block_size"),
    (dict(hessian=-np.eye(64), damp=0.0), "positive definite"),
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
  args = dict(w=np.ones((64, 8), np.float32), hessian=np.eye(64), spec=_spec("w4a16"))
  args.update(kwargs)
  w, h, spec = args.pop("w"), args.pop("hessian"), args.pop("spec")
  with pytest.raises(ValueError, match=match):
    gptq.gptq_quantize(w, h, spec, **args)


def _reference_fasterquant(w, h, bits, groupsize, blocksize, actorder, static_groups,
                           percdamp=0.01):
  """IST-DASLab/gptq gptq.py `GPTQ.fasterquant` with quant.py's asymmetric per-channel
  `Quantizer`, ported as-is (torch, float32, W [out, in]). Returns (Q [out, in], error)."""
  torch = pytest.importorskip("torch")
  maxq = 2 ** bits - 1

  def find_params(x):
    zero_ = torch.zeros(x.shape[0])
    xmin, xmax = torch.minimum(x.min(1)[0], zero_), torch.maximum(x.max(1)[0], zero_)
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp], xmax[tmp] = -1, +1
    scale = (xmax - xmin) / maxq
    return scale.unsqueeze(1), torch.round(-xmin / scale).unsqueeze(1)

  def quantize(x, scale, zero):
    return scale * (torch.clamp(torch.round(x / scale) + zero, 0, maxq) - zero)

  W, H = torch.tensor(w), torch.tensor(h)
  columns = W.shape[1]
  scale, zero = find_params(W)
  dead = torch.diag(H) == 0
  H[dead, dead] = 1
  W[:, dead] = 0
  if static_groups:
    groups = [find_params(W[:, i:(i + groupsize)]) for i in range(0, columns, groupsize)]
  if actorder:
    perm = torch.argsort(torch.diag(H), descending=True)
    W, H = W[:, perm], H[perm][:, perm]
    invperm = torch.argsort(perm)
  Losses, Q = torch.zeros_like(W), torch.zeros_like(W)
  diag = torch.arange(columns)
  H[diag, diag] += percdamp * torch.mean(torch.diag(H))
  Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
  for i1 in range(0, columns, blocksize):
    i2 = min(i1 + blocksize, columns)
    W1 = W[:, i1:i2].clone()
    Q1, Err1, Losses1 = torch.zeros_like(W1), torch.zeros_like(W1), torch.zeros_like(W1)
    Hinv1 = Hinv[i1:i2, i1:i2]
    for i in range(i2 - i1):
      w_, d = W1[:, i], Hinv1[i, i]
      if groupsize != -1:
        if not static_groups:
          if (i1 + i) % groupsize == 0:
            scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)])
        else:
          idx = perm[i1 + i] if actorder else i1 + i
          scale, zero = groups[idx // groupsize]
      q = quantize(w_.unsqueeze(1), scale, zero).flatten()
      Q1[:, i] = q
      Losses1[:, i] = (w_ - q) ** 2 / d ** 2
      err1 = (w_ - q) / d
      W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
      Err1[:, i] = err1
    Q[:, i1:i2] = Q1
    Losses[:, i1:i2] = Losses1 / 2
    W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
  if actorder:
    Q = Q[:, invperm]
  return Q.numpy(), torch.sum(Losses).item()


@pytest.mark.parametrize("bits,group_size,block_size,act_order,static_groups", [
    (4, 0, 64, False, False),    # per channel, 160 rows: a padded last block
    (4, 0, 64, True, False),
    (3, 32, 64, False, False),   # groups starting inside a block
    (3, 32, 64, True, False),
    (3, 32, 16, True, False),    # groups spanning blocks
    (2, 32, 64, True, True),
])
def test_matches_torch_port_of_reference_fasterquant(bits, group_size, block_size, act_order,
                                                     static_groups):
  pytest.importorskip("torch", reason="torch is needed for the reference port")
  x, w = _correlated_layer(n_in=160, n_out=48, n_tokens=512, seed=2)
  x[:, 11] = 0.0  # one dead input
  h = np.asarray(hessian.from_inputs(x))
  spec = fq.QuantSpec(bits, False, "group" if group_size else "channel", group_size)
  w_hat, info = gptq.gptq_quantize(w, h, spec, block_size=block_size, act_order=act_order,
                                   static_groups=static_groups)
  q_ref, error_ref = _reference_fasterquant(w.T.copy(), h.copy(), bits, group_size or -1,
                                            block_size, act_order, static_groups)
  step = np.asarray(info["scale"])[np.asarray(info["g_idx"]), 0]
  np.testing.assert_array_less(np.abs(np.asarray(w_hat) - q_ref.T), 1e-4 * step + 1e-12)
  np.testing.assert_allclose(info["error"], error_ref, rtol=1e-3)


@pytest.mark.parametrize("act_order", [False, True])
def test_a_kept_pruning_mask_stays_exact_and_is_compensated(act_order):
  """With `keep`, the pruned weights come out exactly 0 and the rest on the grid; rounding
  them to 0 inside the loop (SparseGPT's joint mode) beats zeroing GPTQ's output after."""
  x, w = _correlated_layer(n_in=128, n_out=64, n_tokens=512)
  h, spec = hessian.from_inputs(x), _spec("w4a16g64")
  keep = np.random.default_rng(1).random(w.shape) < 0.5
  w_hat, info = gptq.gptq_quantize(w, h, spec, act_order=act_order, keep=keep)
  w_hat = np.asarray(w_hat)
  assert np.all(w_hat[~keep] == 0) and np.count_nonzero(w_hat[keep]) > 0.9 * keep.sum()
  np.testing.assert_allclose(w_hat[keep], _requantize(w_hat, info, spec)[keep], atol=1e-6)
  plain, _ = gptq.gptq_quantize(w, h, spec, act_order=act_order)
  assert _output_error(x, w, w_hat) < 0.9 * _output_error(x, w, np.where(keep, plain, 0))
  everything, _ = gptq.gptq_quantize(w, h, spec, act_order=act_order, keep=np.ones_like(keep))
  np.testing.assert_array_equal(everything, plain)
  with pytest.raises(ValueError, match="keep of shape"):
    gptq.gptq_quantize(w, h, spec, keep=keep[:, :3])
