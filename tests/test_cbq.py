"""CBQ (Ding et al. 2023): CFP outlier pre-processing, LoRA-Rounding, cross-block reconstruction."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effcomp.quant import fake_quant as fq
from effcomp.quant.ptq import cbq, cfp
from effcomp.quant.ptq import lora_rounding as lr


def _gaussian_with_planted(shape, n_planted, low, high, seed, std=1.0):
  """Gaussian(0, std) values with `n_planted` entries set to ±[low … high]·std."""
  rng = np.random.default_rng(seed)
  x = (std * rng.normal(size=shape)).astype(np.float32)
  idx = rng.choice(x.size, n_planted, replace=False)
  x.flat[idx] = std * rng.choice([-1.0, 1.0], n_planted) * np.linspace(low, high, n_planted)
  mask = np.zeros(x.shape, bool)
  mask.flat[idx] = True
  return x, mask


# ----------------------------------------------------------------------------- CFP

def test_coarse_threshold_is_tukeys_fence_on_magnitudes():
  v = -np.arange(1.0, 101.0, dtype=np.float32)  # magnitudes 1 … 100
  q1, q3 = np.quantile(np.abs(v), [0.25, 0.75])
  assert float(cfp.coarse_threshold(v)) == pytest.approx(q3 + 1.5 * (q3 - q1), rel=1e-6)
  assert float(cfp.coarse_threshold(v, lam1=3.0)) == pytest.approx(q3 + 3.0 * (q3 - q1), rel=1e-6)


@pytest.mark.parametrize("seed,std", [(0, 1.0), (1, 0.02), (2, 300.0)])
def test_cfp_mask_is_exactly_the_planted_outliers(seed, std):
  x, planted = _gaussian_with_planted((64, 64), 8, 8.0, 20.0, seed, std)
  np.testing.assert_array_equal(np.asarray(cfp.outlier_mask(x)), planted)
  threshold = float(cfp.fine_split(x))
  inlier_max = np.abs(x[~planted]).max()
  assert inlier_max < threshold < np.abs(x[planted]).min()
  # The coarse fence alone also flags the Gaussian tail: the fine split is what isolates them.
  assert float(cfp.coarse_threshold(x)) < inlier_max


def test_cfp_keeps_every_candidate_when_all_are_outliers():
  x = np.concatenate([np.linspace(-1.0, 1.0, 61), [30.0, -40.0, 50.0]]).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(cfp.outlier_mask(x)), np.abs(x) > 10)


def test_preprocess_weight_truncates_the_planted_outliers_to_the_threshold():
  w, planted = _gaussian_with_planted((64, 32), 5, 10.0, 25.0, seed=3, std=0.02)
  clipped, info = cfp.preprocess_weight(jnp.asarray(w))
  threshold = float(info["threshold"])
  np.testing.assert_array_equal(np.asarray(info["mask"]), planted)
  assert int(info["num_outliers"]) == 5
  np.testing.assert_array_equal(np.asarray(clipped)[~planted], w[~planted])
  np.testing.assert_allclose(np.asarray(clipped)[planted], np.sign(w[planted]) * threshold)
  assert np.abs(np.asarray(clipped)).max() <= threshold < np.abs(w[planted]).min()


def _activations_with_outlier_channels(seed=4, channels=(3, 17, 40)):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(512, 64)).astype(np.float32)
  x[:, list(channels)] *= np.array([25.0, 40.0, 60.0], np.float32)
  planted = np.zeros(64, bool)
  planted[list(channels)] = True
  return x, planted


def test_activation_scales_exceed_one_exactly_on_planted_channels():
  x, planted = _activations_with_outlier_channels()
  rng = np.random.default_rng(5)
  kernels = [0.05 * rng.normal(size=(64, n)).astype(np.float32) for n in (48, 16)]
  s = np.asarray(cfp.activation_scales(np.abs(x).max(axis=0), kernels))
  np.testing.assert_array_equal(s > 1, planted)
  np.testing.assert_array_equal(s[~planted], 1.0)
  # Folding diag(s) into the kernels keeps the layer's function.
  np.testing.assert_allclose((x / s) @ (s[:, None] * kernels[0]), x @ kernels[0],
                             rtol=1e-4, atol=1e-4)


def test_activation_scales_with_alpha_one_bring_outlier_channels_to_the_threshold():
  x, planted = _activations_with_outlier_channels()
  a = np.abs(x).max(axis=0)
  s = np.asarray(cfp.activation_scales(a, None, alpha=1.0))
  np.testing.assert_allclose((a / s)[planted], float(cfp.fine_split(a)), rtol=1e-5)


def test_cfp_rejects_bad_arguments():
  with pytest.raises(ValueError, match="w of shape"):
    cfp.preprocess_weight(jnp.ones(8))
  with pytest.raises(ValueError, match="alpha"):
    cfp.activation_scales(jnp.ones(8), alpha=1.5)
  with pytest.raises(ValueError, match="kernel of shape"):
    cfp.activation_scales(jnp.ones(8), [jnp.ones((4, 3))])
  with pytest.raises(ValueError, match="lam2"):
    cfp.fine_split(jnp.ones(8), lam2=-1.0)


# ----------------------------------------------------------------------------- LoRA-Rounding

def test_rectified_sigmoid_spans_zero_to_one_and_inverts():
  h = np.asarray(lr.rectified_sigmoid(jnp.linspace(-10.0, 10.0, 201)))
  assert h.min() == 0.0 and h.max() == 1.0 and np.all(np.diff(h) >= 0)
  assert 0.0 < h[100] == pytest.approx(0.5)
  p = jnp.array([0.0, 0.3, 0.5, 1.0])
  np.testing.assert_allclose(lr.rectified_sigmoid(lr.inverse_rectified_sigmoid(p)), p, atol=1e-6)


def test_beta_schedule_is_off_during_warmup_then_decays_linearly():
  beta = [float(lr.beta_schedule(s, 100)) for s in (0, 19, 20, 60, 100)]
  assert beta == pytest.approx([0.0, 0.0, 20.0, 11.0, 2.0])


def test_regularizer_is_zero_at_the_ends_and_off_for_beta_zero():
  assert float(lr.regularizer(jnp.array([0.0, 1.0]), 2.0)) == 0.0
  assert float(lr.regularizer(jnp.array([0.5]), 2.0)) == 1.0
  grad = jax.grad(lambda h: lr.regularizer(h, 0.0))(jnp.array([0.5, 0.2]))
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("spec", [fq.QuantSpec(4, False, "group", 8),
                                  fq.QuantSpec(3, True, "channel")])
def test_full_rank_init_is_adaround_init_in_group_views(spec):
  w = jax.random.normal(jax.random.PRNGKey(0), (32, 12))
  scale, _ = fq.weight_scale_and_zero(w, spec)
  a1, a2 = lr.init(w, scale, 12, jax.random.PRNGKey(1))
  assert a1.shape == (32, 12) and a2.shape == (12, 12)
  v = w / lr.full_scale(scale, w.shape)
  np.testing.assert_allclose(lr.h(a1, a2), v - jnp.floor(v), atol=2e-4)
  b1, b2 = lr.init(w, scale, 40, jax.random.PRNGKey(1))  # rank above min(in, out): padded
  assert b1.shape == (32, 40) and b2.shape == (40, 12)
  np.testing.assert_allclose(lr.h(b1, b2), lr.h(a1, a2), atol=1e-6)


def _fit_rounding(x, w, spec, rank, offset, steps=1500, lr_round=1e-2, reg_weight=0.3):
  """AdaRound-style least squares: min ‖x·ŵ(h) − x·w‖² + λ·f_reg over the rounding."""
  scale, zero = fq.weight_scale_and_zero(w, spec)
  view = w.reshape(scale.shape[0], -1, w.shape[1])
  base = lr.base_logits(w, scale) if offset else None
  y = x @ w
  opt = optax.adam(lr_round)

  def offsets(p):
    return lr.h(p["a1"], p["a2"], base, p["gain"] if offset else None)

  def w_hat(p, hard):
    h = offsets(p)
    h = (h >= 0.5).astype(h.dtype) if hard else h
    return fq.fake_quant_with(view, scale, zero, spec, h.reshape(view.shape)).reshape(w.shape)

  def loss(p, beta):
    err = jnp.mean((x @ w_hat(p, False) - y) ** 2) / jnp.mean(y ** 2)
    return err + reg_weight * lr.regularizer(offsets(p), beta) / w.size

  @jax.jit
  def run(p):
    def step(carry, i):
      p, state = carry
      updates, state = opt.update(jax.grad(loss)(p, lr.beta_schedule(i, steps)), state)
      return (optax.apply_updates(p, updates), state), None
    return jax.lax.scan(step, (p, opt.init(p)), jnp.arange(steps))[0][0]

  a1, a2 = lr.init(w, scale, rank, jax.random.PRNGKey(2), method="lora" if offset else "svd")
  p = run({"a1": a1, "a2": a2, "gain": jnp.ones((1, w.shape[1]))})
  error = lambda w_q: float(jnp.sum((x @ w_q - y) ** 2))
  return float(lr.saturation(offsets(p))), error(w_hat(p, True)), error(fq.quantize_weight(w, spec))


@pytest.mark.parametrize("rank,offset", [(8, False), (16, False), (8, True)])
def test_lora_rounding_becomes_binary_and_beats_round_to_nearest(rank, offset):
  kx, kw = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (256, 32)) @ jnp.diag(jnp.linspace(0.2, 2.0, 32))
  w = jax.random.normal(kw, (32, 16))
  saturation, learned, rtn = _fit_rounding(x, w, fq.QuantSpec(3, False, "channel"), rank, offset)
  print(f"rank {rank} offset {offset}: saturation {saturation:.3f}, "
        f"error learned/RTN {learned / rtn:.3f}")
  assert saturation >= 0.95
  assert learned < rtn


def test_offset_parametrisation_starts_at_the_weights_and_at_round_to_nearest():
  spec = fq.QuantSpec(3, False, "group", 8)
  w = jax.random.normal(jax.random.PRNGKey(0), (32, 12))
  scale, zero = fq.weight_scale_and_zero(w, spec)
  a1, a2 = lr.init(w, scale, 4, jax.random.PRNGKey(1), method="lora")
  h = lr.h(a1, a2, lr.base_logits(w, scale), jnp.ones((1, 12)))
  view = w.reshape(4, 8, 12)
  soft = fq.fake_quant_with(view, scale, zero, spec, h.reshape(view.shape)).reshape(w.shape)
  hard = fq.fake_quant_with(view, scale, zero, spec, (h >= 0.5).astype(h.dtype).reshape(view.shape))
  unrounded = (jnp.clip(view / scale + zero, spec.qmin, spec.qmax) - zero) * scale  # only clipped
  np.testing.assert_allclose(soft, unrounded.reshape(w.shape), atol=1e-5)
  np.testing.assert_allclose(hard.reshape(w.shape), fq.quantize_weight(w, spec), atol=1e-5)


# ----------------------------------------------------------------------------- reconstruction

E, H, T = 32, 64, 8
PATHS = ("fc1/kernel", "fc2/kernel")


@functools.lru_cache(maxsize=None)
def _block_fn(act: fq.QuantSpec):
  """A pre-LN residual MLP block; `act_quant` fake-quantizes both linears' inputs."""
  def apply(p, h, act_quant):
    x = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-6)
    x = x * p["ln"]["scale"]
    x = fq.quantize_activation(x, act) if act_quant else x
    x = jax.nn.gelu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    x = fq.quantize_activation(x, act) if act_quant else x
    return h + x @ p["fc2"]["kernel"] + p["fc2"]["bias"]
  return apply


def _toy_model(seed=0, blocks=3):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4 * blocks)
  params = []
  for i in range(blocks):
    k = keys[4 * i:4 * i + 4]
    params.append({
        "ln": {"scale": 1.0 + 0.1 * jax.random.normal(k[0], (E,))},
        "fc1": {"kernel": jax.random.normal(k[1], (E, H)) / jnp.sqrt(E), "bias": jnp.zeros(H)},
        "fc2": {"kernel": 0.5 * jax.random.normal(k[2], (H, E)) / jnp.sqrt(H),
                "bias": 0.1 * jax.random.normal(k[3], (E,))},
    })
  return params


def _inputs(seed, n):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, T, E))


def _output_error(params, qconfig, x, fp_params):
  fn = _block_fn(qconfig.act)
  y_fp, y_q = x, x
  for p_fp, p_q in zip(fp_params, params):
    y_fp, y_q = fn(p_fp, y_fp, False), fn(p_q, y_q, qconfig.act.enabled)
  return float(jnp.mean((y_q - y_fp) ** 2) / jnp.mean(y_fp ** 2))


def _rtn(fp_params, spec):
  out = []
  for p in fp_params:
    p = jax.tree.map(lambda v: v, p)
    for path in PATHS:
      a, b = path.split("/")
      p[a] = {**p[a], b: fq.quantize_weight(p[a][b], spec)}
    out.append(p)
  return out


SETTINGS = {"w2a16g16": cbq.CBQConfig(batch_size=16), "w4a4": cbq.CBQConfig(batch_size=16)}


@pytest.fixture(scope="module")
def reconstructions():
  fp_params = _toy_model()
  calib, held_out = _inputs(1, 256), _inputs(2, 256)
  out = {}
  for name, config in SETTINGS.items():
    qconfig = fq.QuantConfig.parse(name)
    runs = {"cbq": config, "blockwise": dataclasses.replace(config, cross_block=False)}
    errors = {"rtn": (_output_error(_rtn(fp_params, qconfig.weight), qconfig, calib, fp_params),
                      _output_error(_rtn(fp_params, qconfig.weight), qconfig, held_out, fp_params))}
    results = {}
    for run, cfg in runs.items():
      result = cbq.reconstruct([_block_fn(qconfig.act)] * 3, fp_params, calib, cfg, qconfig,
                               kernel_paths=[PATHS] * 3)
      results[run] = result
      errors[run] = (_output_error(result.params, qconfig, calib, fp_params),
                     _output_error(result.params, qconfig, held_out, fp_params))
    print(f"\n{name}: output error (calib, held-out) " +
          ", ".join(f"{k} {v[0]:.4g}/{v[1]:.4g}" for k, v in errors.items()) +
          f"; cbq/rtn {errors['cbq'][1] / errors['rtn'][1]:.3f}, "
          f"blockwise/rtn {errors['blockwise'][1] / errors['rtn'][1]:.3f}; seconds per window " +
          ", ".join(f"{log['seconds']:.2f}" for log in results["cbq"].logs))
    out[name] = dict(qconfig=qconfig, errors=errors, fp_params=fp_params, **results)
  return out


def test_windows_slide_with_the_configured_overlap():
  assert cbq.windows(3, 2, 1) == [(0, 2), (1, 3)]
  assert cbq.windows(5, 3, 1) == [(0, 3), (2, 5)]
  assert cbq.windows(4, 2, 0) == [(0, 2), (2, 4)]
  assert cbq.windows(3, 1, 0) == [(0, 1), (1, 2), (2, 3)]
  assert cbq.windows(1, 2, 1) == [(0, 1)]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_reconstruction_beats_round_to_nearest(reconstructions, name):
  errors = reconstructions[name]["errors"]
  assert errors["cbq"][0] < errors["rtn"][0]
  assert errors["cbq"][1] < errors["rtn"][1]  # held-out samples too


@pytest.mark.parametrize("name", list(SETTINGS))
def test_blockwise_ablation_runs_and_differs(reconstructions, name):
  r = reconstructions[name]
  assert [log["blocks"] for log in r["blockwise"].logs] == [(0, 1), (1, 2), (2, 3)]
  assert [log["blocks"] for log in r["cbq"].logs] == [(0, 2), (1, 3)]
  assert [log["finalized"] for log in r["cbq"].logs] == [(0, 1), (1, 3)]
  kernels = lambda run: [p["fc1"]["kernel"] for p in r[run].params]
  assert any(not np.array_equal(a, b) for a, b in zip(kernels("cbq"), kernels("blockwise")))
  assert r["errors"]["blockwise"][0] != r["errors"]["cbq"][0]


def test_reconstruction_keeps_shapes_and_puts_kernels_on_their_grid(reconstructions):
  r = reconstructions["w2a16g16"]
  result, spec = r["cbq"], r["qconfig"].weight
  assert jax.tree.structure(result.params) == jax.tree.structure(r["fp_params"])
  for fp, q, scales in zip(r["fp_params"], result.params, result.scales):
    assert set(scales) == set(PATHS)
    np.testing.assert_array_equal(q["ln"]["scale"], fp["ln"]["scale"])
    np.testing.assert_array_equal(q["fc2"]["bias"], fp["fc2"]["bias"])
    for path in PATHS:
      a, b = path.split("/")
      w = q[a][b]
      assert w.shape == fp[a][b].shape and w.dtype == fp[a][b].dtype
      scale, zero = scales[path]
      assert scale.shape == (w.shape[0] // 16, 1, w.shape[1])
      view = w.reshape(scale.shape[0], -1, w.shape[1])
      codes = fq.quantize(view, scale, zero, spec)
      assert int(codes.min()) >= 0 and int(codes.max()) <= 3
      np.testing.assert_allclose(fq.dequantize(codes, scale, zero), view, atol=1e-5)
  for log in result.logs:
    assert log["losses"].shape == (SETTINGS["w2a16g16"].steps, 4)
    assert log["rec_final"] < log["rec_init"] and log["saturation"] >= 0.8


def test_reconstruction_with_nothing_to_learn_is_round_to_nearest():
  fp_params, qconfig = _toy_model(), fq.QuantConfig.parse("w3a8g16")
  config = cbq.CBQConfig(lora_rounding=False, learn_step=False, batch_size=4)
  result = cbq.reconstruct([_block_fn(qconfig.act)] * 3, fp_params, _inputs(1, 8), config, qconfig,
                           kernel_paths=[PATHS] * 3)
  for q, rtn in zip(result.params, _rtn(fp_params, qconfig.weight)):
    for path in PATHS:
      a, b = path.split("/")
      np.testing.assert_array_equal(q[a][b], rtn[a][b])
  assert all(log["losses"].shape == (0, 4) for log in result.logs)


@pytest.mark.parametrize("field,value", [("window", 0), ("overlap", 2), ("steps", -1), ("rank", 0),
                                         ("lr_step", 0.0), ("kl_weight", -1.0), ("warmup", 1.0),
                                         ("beta_start", 1.0), ("batch_size", 0), ("target", "x"),
                                         ("rounding_init", "x")])
def test_bad_config_values_name_the_field(field, value):
  with pytest.raises(ValueError, match=f"CBQConfig.{field}="):
    cbq.CBQConfig(**{field: value})


def test_reconstruct_rejects_mismatched_arguments():
  fp_params, qconfig = _toy_model(blocks=2), fq.QuantConfig.parse("w4a16")
  fns, x, config = [_block_fn(qconfig.act)] * 2, _inputs(1, 4), cbq.CBQConfig(steps=1, batch_size=2)
  with pytest.raises(ValueError, match="same number"):
    cbq.reconstruct(fns[:1], fp_params, x, config, qconfig, kernel_paths=[PATHS] * 2)
  with pytest.raises(ValueError, match="not a path"):
    cbq.reconstruct(fns, fp_params, x, config, qconfig, kernel_paths=[PATHS, ("fc3/kernel",)])
  with pytest.raises(ValueError, match="2-D kernel"):
    cbq.reconstruct(fns, fp_params, x, config, qconfig, kernel_paths=[PATHS, ("fc1/bias",)])
  with pytest.raises(ValueError, match="batch_size"):
    cbq.reconstruct(fns, fp_params, x, cbq.CBQConfig(batch_size=8), qconfig,
                    kernel_paths=[PATHS] * 2)
  with pytest.raises(ValueError, match=r"\[N, T, E\]"):
    cbq.reconstruct(fns, fp_params, x[0], config, qconfig, kernel_paths=[PATHS] * 2)
