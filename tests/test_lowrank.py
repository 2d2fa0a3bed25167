"""Low-rank factorization: SVD, ASVD, SVD-LLM, rank allocation and whole-model factorization."""

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.lowrank import factorize, factorized_dense, rank_allocation, svd, whitened
from effcomp.models.lm import bert, llama
from effcomp.quant.ptq import blocks, hessian


def _output_error(x, w, a, b):
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  return float(np.linalg.norm(x @ w - x @ (np.asarray(a, np.float64) @ np.asarray(b, np.float64))))


def _anisotropic_inputs(n, d, seed):
  """Correlated inputs with channel scales spread over two decades."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) * np.logspace(0, 2, d)[:, None]
  return (rng.normal(size=(n, d)) @ mix).astype(np.float32)


# --- plain SVD ----------------------------------------------------------------------------------

def test_full_rank_svd_reconstructs_the_kernel_and_error_decreases_with_rank():
  w = jax.random.normal(jax.random.key(0), (12, 8))
  sigma = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
  errors = []
  for r in range(1, 9):
    a, b = svd.truncated_svd(w, r)
    assert a.shape == (12, r) and b.shape == (r, 8) and a.dtype == w.dtype
    errors.append(float(np.linalg.norm(np.asarray(a @ b, np.float64) - np.asarray(w))))
    # Eckart–Young: the error is the norm of the dropped singular values.
    np.testing.assert_allclose(errors[-1], np.sqrt(np.sum(sigma[r:] ** 2)), atol=1e-5)
  assert errors[-1] < 1e-5
  assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))


def test_singular_values_are_split_as_square_roots_on_both_factors():
  w = jax.random.normal(jax.random.key(1), (10, 6))
  a, b = svd.truncated_svd(w, 4)
  sigma = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[:4]
  np.testing.assert_allclose(np.asarray(a.T @ a), np.diag(sigma), atol=1e-5)
  np.testing.assert_allclose(np.asarray(b @ b.T), np.diag(sigma), atol=1e-5)


def test_energy_rank_is_the_smallest_rank_keeping_tau_of_the_squared_singular_values():
  assert [svd.energy_rank([3.0, 2.0, 1.0], t) for t in (0.5, 9 / 14, 0.65, 13 / 14, 0.95, 1.0)] \
      == [1, 1, 2, 2, 3, 3]
  s = np.linalg.svd(np.random.default_rng(0).normal(size=(20, 30)), compute_uv=False)
  for tau in (0.1, 0.5, 0.8, 0.9, 0.99, 1.0):
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)
    expected = next(r + 1 for r in range(len(s)) if energy[r] >= tau - 1e-12)
    assert svd.energy_rank(s, tau) == expected


def test_parameter_counts_of_dense_and_factorized_layers():
  assert svd.dense_params(64, 32) == 2048
  assert svd.factorized_params(64, 32, 8) == 8 * 96
  assert svd.ratio_rank(64, 32, 0.5) == 10  # int(2048 · 0.5 / 96)
  assert svd.break_even_rank(64, 32) == 21
  assert svd.ratio_rank(4, 4, 0.01) == 1


# --- activation-aware SVD -----------------------------------------------------------------------

def test_svdllm_is_the_closed_form_optimum_of_the_output_error_and_beats_svd():
  x = _anisotropic_inputs(256, 16, seed=0)
  w = jax.random.normal(jax.random.key(2), (16, 12))
  rank = 4
  s_factor = whitened.whitening_factor(hessian.from_inputs(x))
  a, b = whitened.svdllm_factors(w, s_factor, rank)
  # The best rank-r approximation of XW in the Frobenius norm is its truncated SVD, reachable
  # as X·M because it lies in X's column space; M = X⁺ [XW]_r is the unique minimizer.
  xd, wd = np.asarray(x, np.float64), np.asarray(w, np.float64)
  u, sigma, vt = np.linalg.svd(xd @ wd, full_matrices=False)
  best = (u[:, :rank] * sigma[:rank]) @ vt[:rank]
  m_opt = np.linalg.lstsq(xd, best, rcond=None)[0]
  np.testing.assert_allclose(np.asarray(a, np.float64) @ np.asarray(b, np.float64), m_opt,
                             rtol=1e-4, atol=1e-4 * np.abs(m_opt).max())
  np.testing.assert_allclose(_output_error(x, w, a, b), np.sqrt(np.sum(sigma[rank:] ** 2)),
                             rtol=1e-4)
  plain = _output_error(x, w, *svd.truncated_svd(w, rank))
  assert _output_error(x, w, a, b) < 0.7 * plain


def test_svdllm_dropped_whitened_singular_values_are_the_output_error():
  x = _anisotropic_inputs(128, 10, seed=1)
  w = jax.random.normal(jax.random.key(3), (10, 14))
  s_factor = whitened.whitening_factor(np.asarray(x, np.float64).T @ np.asarray(x, np.float64))
  sigma = np.linalg.svd(whitened.whitened_kernel(w, s_factor), compute_uv=False)
  for rank in (1, 5, 10):
    a, b = whitened.svdllm_factors(w, s_factor, rank)
    np.testing.assert_allclose(_output_error(x, w, a, b) ** 2, np.sum(sigma[rank:] ** 2),
                               rtol=1e-3, atol=1e-3 * np.sum(sigma ** 2) * 1e-3)


def test_whitening_factor_of_rank_deficient_inputs_is_shifted_to_positive_definite():
  x = np.random.default_rng(0).normal(size=(5, 8))  # 5 tokens, 8 channels: XᵀX has rank 5
  h = x.T @ x
  s_factor = whitened.whitening_factor(h)
  assert np.all(np.isfinite(s_factor)) and np.allclose(s_factor, np.tril(s_factor))
  shift = s_factor @ s_factor.T - h
  np.testing.assert_allclose(shift, np.eye(8) * shift[0, 0], atol=1e-9)
  assert 0 < shift[0, 0] < 1e-4 * np.mean(np.diag(h))


def test_asvd_scale_is_mean_abs_activation_to_the_alpha_and_reduces_output_error():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(512, 32)).astype(np.float32)
  x[:, [3, 17, 29]] *= 50.0  # outlier channels, as trained LLMs have
  batches = [jnp.asarray(x[:200]).reshape(4, 50, 32), jnp.asarray(x[200:])]
  channel_mean = whitened.abs_mean(batches)
  np.testing.assert_allclose(channel_mean, np.abs(x).mean(0), rtol=1e-5)
  scale = whitened.activation_scale(channel_mean)
  np.testing.assert_allclose(scale, np.abs(x).mean(0).astype(np.float64) ** 0.5 + 1e-6, rtol=1e-5)
  w = jax.random.normal(jax.random.key(4), (32, 24))
  a, b = whitened.asvd_factors(w, scale, 6)
  assert _output_error(x, w, a, b) < 0.5 * _output_error(x, w, *svd.truncated_svd(w, 6))
  np.testing.assert_allclose(np.asarray(jnp.matmul(*whitened.asvd_factors(w, scale, 24))), w,
                             atol=1e-5)


# --- rank allocation ----------------------------------------------------------------------------

SHAPES = {"attn/q/kernel": (32, 32), "mlp/up/kernel": (32, 96), "mlp/down/kernel": (96, 32)}


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_uniform_and_energy_ranks_meet_the_parameter_budget(ratio):
  rng = np.random.default_rng(0)
  spectra = {k: np.sort(rng.exponential(size=min(s)))[::-1] ** (1 + i)
             for i, (k, s) in enumerate(SHAPES.items())}
  budget = ratio * rank_allocation.dense_count(SHAPES)
  uniform = rank_allocation.uniform_ranks(SHAPES, ratio)
  assert uniform == {k: int(n * m * ratio / (n + m)) for k, (n, m) in SHAPES.items()}
  energy = rank_allocation.energy_ranks(spectra, SHAPES, ratio)
  for ranks in (uniform, energy):
    assert rank_allocation.factorized_count(SHAPES, ranks) <= budget
    assert all(1 <= ranks[k] <= svd.break_even_rank(*s) for k, s in SHAPES.items())
  # Greedy: one more rank in any layer below its cap would break the budget.
  used = rank_allocation.factorized_count(SHAPES, energy)
  for k, s in SHAPES.items():
    if energy[k] < svd.break_even_rank(*s):
      assert used + sum(s) > budget


def test_energy_ranks_give_slowly_decaying_spectra_more_rank():
  shapes = {"flat": (10, 10), "steep": (10, 10)}
  spectra = {"flat": np.ones(10), "steep": 10.0 ** -np.arange(10)}
  # Budget 0.4 · 200 = 80 = four ranks of 20; rank 1 each, then flat's 0.1's beat steep's 0.01.
  assert rank_allocation.energy_ranks(spectra, shapes, 0.4) == {"flat": 3, "steep": 1}
  assert rank_allocation.uniform_ranks(shapes, 0.4) == {"flat": 2, "steep": 2}


# --- whole models -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama():
  model = llama.Llama(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
                      mlp_dim=48, tie_embeddings=False)
  tokens = jax.random.randint(jax.random.key(0), (8, 16), 0, 64)
  params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
  # A few large input channels, so activation-aware methods have something to see.
  for i in range(2):
    for norm in ("attn_norm", "mlp_norm"):
      scale = params[f"layers_{i}"][norm]["scale"]
      params[f"layers_{i}"][norm]["scale"] = scale.at[:3].set(20.0)
  return model, params, tokens, [tokens[:4], tokens[4:]]


def _factorized_logits(model, params, tokens):
  fn = jax.jit(lambda p, t: factorized_dense.apply_factorized(
      lambda: model.apply({"params": p}, t)))
  return fn(params, tokens)


@pytest.mark.parametrize("method", factorize.METHODS)
def test_full_rank_factorized_llama_equals_the_model_under_jit(tiny_llama, method):
  model, params, tokens, calib = tiny_llama
  bm = blocks.for_llama(model)
  fparams, report = factorize.factorize_model(bm, params, calib, method,
                                              options={"ranks": "full"})
  q = fparams["layers_0"]["attn"]["q"]
  assert set(q) == {"kernel_a", "kernel_b"} and q["kernel_a"].shape == (32, 32)
  assert fparams["layers_1"]["mlp"]["down"]["kernel_a"].shape == (48, 32)
  assert "kernel" in fparams["lm_head"]
  assert report["ranks"] == {k: min(blocks.get_path(params, k).shape)
                             for i in range(2) for k in bm.kernels(i)}
  ref = model.apply({"params": params}, tokens)
  np.testing.assert_allclose(_factorized_logits(model, fparams, tokens), ref, atol=1e-4)
  np.testing.assert_allclose(
      model.apply({"params": factorized_dense.merge_factors(fparams)}, tokens), ref, atol=1e-4)
  # Without the interceptor flax looks for the missing kernel.
  with pytest.raises(flax.errors.ScopeParamNotFoundError):
    model.apply({"params": fparams}, tokens)


@pytest.mark.parametrize("allocation", factorize.ALLOCATIONS)
def test_half_budget_llama_has_half_the_kernel_parameters_and_svdllm_beats_svd(tiny_llama,
                                                                                allocation):
  model, params, tokens, calib = tiny_llama
  bm = blocks.for_llama(model)
  ref = model.apply({"params": params}, tokens)
  errors = {}
  for method in ("svd", "svdllm"):
    fparams, report = factorize.factorize_model(bm, params, calib, method, 0.5,
                                                {"allocation": allocation})
    kernels = sum(blocks.get_path(params, k).size for i in range(2) for k in bm.kernels(i))
    factors = sum(fparams[f"layers_{i}"][part][name][f].size for i in range(2)
                  for part, names in (("attn", "qkvo"), ("mlp", ("gate", "up", "down")))
                  for name in names for f in ("kernel_a", "kernel_b"))
    assert report["params_before"] == kernels and report["params_after"] == factors
    assert factors <= 0.5 * kernels
    assert (report["model_params_before"] - report["model_params_after"]
            == kernels - factors)
    assert report["seconds"] > 0
    errors[method] = float(jnp.mean((_factorized_logits(model, fparams, tokens) - ref) ** 2))
  assert errors["svdllm"] < errors["svd"]


def test_bert_factorization_keeps_biases_and_is_exact_at_full_rank():
  encoder = bert.BertEncoder(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=16)
  ids = jax.random.randint(jax.random.key(0), (4, 9), 0, 50)
  mask = jnp.array([[1] * 9, [1] * 6 + [0] * 3, [1] * 9, [1] * 4 + [0] * 5])
  params = nn.unbox(encoder.init(jax.random.key(1), ids, mask)["params"])
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape), params)
  bm = blocks.for_bert(encoder)
  fparams, _ = factorize.factorize_model(bm, params, [(ids, mask)], "asvd",
                                         options={"ranks": "full"})
  assert set(fparams["layer_0"]["query"]) == {"kernel_a", "kernel_b", "bias"}
  np.testing.assert_array_equal(fparams["layer_0"]["query"]["bias"],
                                params["layer_0"]["query"]["bias"])
  out = jax.jit(lambda p: factorized_dense.apply_factorized(
      lambda: encoder.apply({"params": p}, ids, mask)))(fparams)
  np.testing.assert_allclose(out, encoder.apply({"params": params}, ids, mask), atol=1e-4)


def test_energy_threshold_and_explicit_ranks_choose_each_layers_rank(tiny_llama):
  model, params, tokens, calib = tiny_llama
  bm = blocks.for_llama(model)
  _, report = factorize.factorize_model(bm, params, calib, "svd", options={"energy": 0.9})
  for k, r in report["ranks"].items():
    assert r == svd.energy_rank(svd.singular_values(blocks.get_path(params, k)), 0.9)
  fparams, report = factorize.factorize_model(bm, params, [], "svd",
                                              options={"ranks": {"layers_1/mlp/up/kernel": 5}})
  assert report["ranks"] == {"layers_1/mlp/up/kernel": 5}
  assert fparams["layers_1"]["mlp"]["up"]["kernel_b"].shape == (5, 48)
  assert "kernel" in fparams["layers_1"]["mlp"]["gate"]


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "qr"}, "method"),
    ({"param_ratio": 0.0}, "param_ratio"),
    ({"param_ratio": 1.5}, "param_ratio"),
    ({"param_ratio": 0.01}, "param_ratio"),
    ({"options": {"rnak": 3}}, "options"),
    ({"options": {"allocation": "greedy"}}, r"options\['allocation'\]"),
    ({"options": {"ranks": {"layers_0/attn/q/kernel": 33}}}, r"options\['ranks'\]"),
    ({"options": {"ranks": {"layers_9/attn/q/kernel": 3}}}, r"options\['ranks'\]"),
    ({"options": {"energy": 1.5}}, r"options\['energy'\]"),
    ({"calib": []}, "calib"),
])
def test_bad_arguments_are_named(tiny_llama, kwargs, name):
  model, params, tokens, calib = tiny_llama
  args = {"bm": blocks.for_llama(model), "params": params, "calib": calib, "method": "svdllm"}
  with pytest.raises(ValueError, match=name):
    factorize.factorize_model(**{**args, **kwargs})


def test_bad_arguments_of_the_pieces_are_named():
  w = jnp.ones((6, 4))
  with pytest.raises(ValueError, match="rank"):
    svd.truncated_svd(w, 5)
  with pytest.raises(ValueError, match="w of shape"):
    svd.truncated_svd(jnp.ones(6), 1)
  with pytest.raises(ValueError, match="tau"):
    svd.energy_rank([1.0], 0.0)
  with pytest.raises(ValueError, match="hessian"):
    whitened.whitening_factor(np.ones((3, 4)))
  with pytest.raises(ValueError, match="whitening"):
    whitened.svdllm_factors(w, np.eye(4), 2)
  with pytest.raises(ValueError, match="spectra"):
    rank_allocation.energy_ranks({"a": np.ones(4)}, {"b": (4, 4)}, 0.5)
  with pytest.raises(ValueError, match="path"):
    factorized_dense.replace_kernel({"q": {"bias": w}}, "q/bias", w, w)
