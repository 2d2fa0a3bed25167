"""The KL autoencoder (effcomp.models.vae): shapes, diffusers parity, checkpoint I/O, loss."""

import json

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effcomp import models
from effcomp.models.vae import (SD_VAE, SMALL_VAE, AutoencoderKL, autoencoder_kl,
                                diffusers_weights, losses)
from effcomp.train import sharding

# Three stages (f = 4) so both resnet shortcuts (8 → 16 down, 16 → 8 up) and two resamplers
# per side are exercised; 4 groups of 2 or 4 channels.
TINY = dict(block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4,
            norm_num_groups=4)


def _param_shapes(model):
  """The boxed (logically named) params of `model`, as shapes: traced, nothing compiled."""
  x = jnp.zeros((1, 8, 8, model.in_channels))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample_posterior=False))["params"]


def _random_params(model, seed=0, perturb=True):
  """`model`'s params drawn with numpy (jax's RNG costs a compile per shape on the CPU):
  kernels U(±1/√fan_in) like `TORCH_INIT`; with `perturb`, norm scales 1 + 0.1·N(0, 1) and
  biases 0.1·N(0, 1), else ones and zeros like the model's own init."""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    if len(shape.shape) > 1:
      bound = 1 / np.sqrt(np.prod(shape.shape[:-1]))
      return rng.uniform(-bound, bound, shape.shape).astype(np.float32)
    base = 1.0 if path[-1].key == "scale" else 0.0
    noise = 0.1 * rng.normal(size=shape.shape) if perturb else np.zeros(shape.shape)
    return (base + noise).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, nn.unbox(_param_shapes(model)))


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("widths,side", [((32, 64), 32), ((8, 16, 16), 16), ((8,), 8)])
def test_latent_is_downsampled_by_two_per_stage_and_decoded_back(widths, side):
  model = AutoencoderKL(**dict(TINY, block_out_channels=widths))
  f = 2 ** (len(widths) - 1)
  assert model.downsampling_factor == f
  params = _param_shapes(model)
  x = jnp.zeros((2, side, side, 3))
  recon, mean, logvar = jax.eval_shape(
      lambda p: model.apply({"params": p}, x, rngs={"sample": jax.random.key(0)}), params)
  assert mean.shape == logvar.shape == (2, side // f, side // f, 4)
  assert recon.shape == x.shape and recon.dtype == mean.dtype == jnp.float32
  out = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.ones((1, 3, 5, 4)),
                                            method="decode"), params)
  assert out.shape == (1, 3 * f, 5 * f, 3)


def test_every_param_has_logical_axis_names():
  leaves = jax.tree.leaves(_param_shapes(AutoencoderKL(**TINY)),
                           is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(p, nn.LogicallyPartitioned) for p in leaves)
  assert all(len(p.names) == len(p.value.shape) for p in leaves)
  names = {n for p in leaves for n in p.names}
  assert names == {"height", "width", "conv_in", "conv_out", "embed", "heads", "norm"}
  assert names <= {name for name, _ in sharding.LOGICAL_RULES}


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = AutoencoderKL(**TINY, dtype="bfloat16")
  params = _param_shapes(model)
  assert {p.value.dtype for p in jax.tree.leaves(
      params, is_leaf=lambda x: isinstance(x, nn.Partitioned))} == {np.dtype("float32")}
  outputs = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((1, 8, 8, 3)),
                                                 sample_posterior=False), params)
  assert [o.dtype for o in outputs] == [np.dtype("float32")] * 3


def test_registered_and_built_from_config_dicts():
  assert models.build("autoencoder_kl", **SMALL_VAE).block_out_channels == (32, 64)
  sd = models.build("autoencoder_kl", **SD_VAE)
  assert (sd.downsampling_factor, sd.scaling_factor) == (8, 0.18215)
  shapes = diffusers_weights.param_shapes(sd)
  assert shapes[("encoder", "down_blocks_3", "resnets_1", "conv2", "kernel")] == (3, 3, 512, 512)
  assert ("decoder", "up_blocks_3", "resnets_2", "norm1", "scale") in shapes
  # The SD VAE has 83.65M parameters (34.16M encoder, 49.49M decoder).
  assert sum(int(np.prod(s)) for s in shapes.values()) == 83_653_863


def test_posterior_sample_uses_the_sample_rng_and_the_mean_without_it():
  model = AutoencoderKL(**dict(TINY, block_out_channels=(8,)))  # one stage: few ops to compile
  x = _images((2, 4, 4, 3))
  params = _random_params(model)
  apply = lambda key, sample: model.apply({"params": params}, x, sample, rngs={"sample": key})
  deterministic, mean, _ = apply(jax.random.key(0), False)
  np.testing.assert_array_equal(model.apply({"params": params}, mean, method="decode"),
                                deterministic)
  a, b = apply(jax.random.key(1), True)[0], apply(jax.random.key(2), True)[0]
  assert not np.allclose(a, b) and not np.allclose(a, deterministic)
  np.testing.assert_array_equal(a, apply(jax.random.key(1), True)[0])


def test_sample_latent_has_the_posterior_mean_and_std():
  mean, logvar = jnp.full((4000, 2), 0.5), jnp.log(jnp.array([[0.25, 4.0]]))
  z = autoencoder_kl.sample_latent(jax.random.key(0), mean, jnp.broadcast_to(logvar, mean.shape))
  np.testing.assert_allclose(z.mean(0), [0.5, 0.5], atol=0.1)
  np.testing.assert_allclose(z.std(0), [0.5, 2.0], rtol=0.05)


def test_latent_scaling_round_trips():
  model = AutoencoderKL(**TINY, scaling_factor=0.5, shift_factor=0.1)
  z = jnp.arange(6.0)
  np.testing.assert_allclose(model.scale_latents(z), (z - 0.1) * 0.5)
  np.testing.assert_allclose(model.unscale_latents(model.scale_latents(z)), z, rtol=1e-6)


@pytest.mark.parametrize("config,message", [
    (dict(norm_num_groups=3), "norm_num_groups=3"),
    (dict(block_out_channels=()), "block_out_channels=()"),
    (dict(layers_per_block=0), "layers_per_block=0")])
def test_invalid_config_is_a_value_error_naming_the_field(config, message):
  with pytest.raises(ValueError, match=message):
    _param_shapes(AutoencoderKL(**dict(TINY, **config)))


def test_encode_and_decode_reject_inputs_with_the_wrong_channels():
  model = AutoencoderKL(**TINY)
  params = _param_shapes(model)
  with pytest.raises(ValueError, match="in_channels=3"):
    jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((1, 8, 8, 1)),
                                        method="encode"), params)
  with pytest.raises(ValueError, match="latent_channels=4"):
    jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((1, 2, 2, 3)),
                                        method="decode"), params)


def _diffusers_model(torch, diffusers, **config):
  """A seeded random-weight diffusers AutoencoderKL (norm affines and biases perturbed)."""
  torch.manual_seed(0)
  n = len(config["block_out_channels"])
  model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                  up_block_types=("UpDecoderBlock2D",) * n, **config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn_like(p))
  return model


@pytest.mark.parametrize("config", [TINY, dict(TINY, block_out_channels=(8, 16),
                                               mid_block_add_attention=False, in_channels=1)])
def test_loaded_diffusers_checkpoint_matches_diffusers_encode_and_decode(tmp_path, config):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  reference = _diffusers_model(torch, diffusers, **config)
  reference.save_pretrained(str(tmp_path), safe_serialization=True)
  model, params = diffusers_weights.load(str(tmp_path))
  assert model.block_out_channels == config["block_out_channels"]
  x, z = _images((2, 16, 16, model.in_channels), 1), _images((2, 4, 8, 4), 2)
  with torch.no_grad():
    posterior = reference.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
    decoded = reference.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample
  mean, logvar = model.apply({"params": params}, x, method="encode")
  nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(nchw(mean), posterior.mean.numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(nchw(logvar), posterior.logvar.numpy(), atol=1e-4, rtol=1e-4)
  out = model.apply({"params": params}, z, method="decode")
  np.testing.assert_allclose(nchw(out), decoded.numpy(), atol=1e-4, rtol=1e-4)


def test_saved_folder_loads_in_diffusers_with_equal_outputs(tmp_path):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  model = AutoencoderKL(**TINY, scaling_factor=0.3)
  params = _random_params(model, seed=3)
  diffusers_weights.save(str(tmp_path), model, params)
  reference = diffusers.AutoencoderKL.from_pretrained(str(tmp_path)).eval()
  assert reference.config.scaling_factor == 0.3
  z = _images((1, 4, 4, 4), 4)
  with torch.no_grad():
    expected = reference.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample.numpy()
  out = model.apply({"params": params}, z, method="decode")
  np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, atol=1e-4)


def test_save_then_load_round_trips_params_and_config(tmp_path):
  model = AutoencoderKL(**TINY, shift_factor=0.25, use_post_quant_conv=False)
  params = _random_params(model)
  diffusers_weights.save(str(tmp_path), model, params)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["_class_name"] == "AutoencoderKL" and config["block_out_channels"] == [8, 16, 16]
  loaded_model, loaded = diffusers_weights.load(str(tmp_path))
  assert (diffusers_weights.config_from_model(loaded_model)
          == diffusers_weights.config_from_model(model))
  flat, flat_loaded = (flax.traverse_util.flatten_dict(p) for p in (params, loaded))
  assert flat.keys() == flat_loaded.keys()
  for path in flat:
    np.testing.assert_array_equal(flat_loaded[path], flat[path], err_msg="/".join(path))


def test_diffusers_names_and_layouts():
  model = AutoencoderKL(**TINY)
  params = _random_params(model)
  tensors = diffusers_weights.params_to_diffusers(params, model)
  assert tensors["encoder.down_blocks.0.downsamplers.0.conv.weight"].shape == (8, 8, 3, 3)
  assert tensors["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"].shape == (16, 8, 1, 1)
  assert tensors["decoder.up_blocks.1.upsamplers.0.conv.weight"].shape == (16, 16, 3, 3)
  assert tensors["quant_conv.weight"].shape == (8, 8, 1, 1)
  attention = params["decoder"]["mid_block"]["attentions_0"]
  np.testing.assert_array_equal(tensors["decoder.mid_block.attentions.0.to_out.0.weight"],
                                attention["to_out_0"]["kernel"].T)
  np.testing.assert_array_equal(tensors["encoder.conv_in.weight"][5, 2, 0, 1],
                                params["encoder"]["conv_in"]["kernel"][0, 1, 2, 5])
  np.testing.assert_array_equal(tensors["decoder.mid_block.attentions.0.group_norm.weight"],
                                attention["group_norm"]["scale"])
  assert len(tensors) == len(jax.tree.leaves(params))


def test_deprecated_attention_names_and_conv_shapes_load():
  model = AutoencoderKL(**TINY)
  tensors = diffusers_weights.params_to_diffusers(_random_params(model), model)
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  legacy = {}
  for name, array in tensors.items():
    for new, deprecated in old.items():
      if f".attentions.0.{new}." in name:
        name = name.replace(f".{new}.", f".{deprecated}.")
        array = array[:, :, None, None] if array.ndim == 2 else array
    legacy[name] = array
  assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
  loaded = diffusers_weights.params_from_diffusers(legacy, model)
  expected = diffusers_weights.params_from_diffusers(tensors, model)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_that_does_not_fit_names_the_tensors():
  model = AutoencoderKL(**TINY)
  tensors = diffusers_weights.params_to_diffusers(_random_params(model), model)
  tensors.pop("decoder.conv_out.bias")
  tensors["encoder.extra.weight"] = np.zeros(3, np.float32)
  tensors["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r"missing \['decoder.conv_out.bias'\].*quant_conv.weight "
                                       r"\(8, 8, 3, 3\) ≠ \(8, 8, 1, 1\).*encoder.extra.weight"):
    diffusers_weights.params_from_diffusers(tensors, model)


def test_unsupported_configs_and_missing_weights_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="act_fn='gelu'"):
    diffusers_weights.model_from_config({"act_fn": "gelu"})
  with pytest.raises(ValueError, match="down_block_types"):
    diffusers_weights.model_from_config({"block_out_channels": [8, 16],
                                         "down_block_types": ["AttnDownEncoderBlock2D"] * 2})
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
    diffusers_weights.load(str(tmp_path))


def test_kl_matches_the_closed_form_and_its_gradient():
  rng = np.random.default_rng(0)
  mean, logvar = rng.normal(size=(3, 2, 2, 4)), rng.normal(size=(3, 2, 2, 4))
  sigma = np.exp(0.5 * logvar)
  # KL(N(μ, σ²) ‖ N(0, 1)) = −log σ + (σ² + μ²)/2 − 1/2, summed per example.
  expected = np.sum(-np.log(sigma) + (sigma ** 2 + mean ** 2) / 2 - 0.5, axis=(1, 2, 3))
  kl = losses.kl_divergence(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
  np.testing.assert_allclose(kl, expected, rtol=1e-5)
  grad_mean, grad_logvar = jax.grad(lambda m, l: losses.kl_divergence(m, l).sum(), (0, 1))(
      jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
  np.testing.assert_allclose(grad_mean, mean, rtol=1e-5)
  np.testing.assert_allclose(grad_logvar, 0.5 * (np.exp(logvar) - 1), rtol=1e-5, atol=1e-6)
  assert float(losses.kl_divergence(jnp.zeros((1, 2)), jnp.zeros((1, 2)))[0]) == 0.0


@pytest.mark.parametrize("reconstruction", ["l1", "l2"])
def test_loss_is_summed_per_example_reconstruction_plus_weighted_kl(reconstruction):
  rng = np.random.default_rng(1)
  x, recon = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  mean, logvar = rng.normal(size=(2, 2, 2, 4)), rng.normal(size=(2, 2, 2, 4))
  loss, metrics = losses.reconstruction_kl_loss(recon, x, mean, logvar, kl_weight=0.01,
                                                reconstruction=reconstruction)
  diff = recon - x
  rec = (np.abs(diff) if reconstruction == "l1" else diff ** 2).sum() / 2
  kl = np.mean(losses.kl_divergence(mean, logvar))
  np.testing.assert_allclose(loss, rec + 0.01 * kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["reconstruction"], rec, rtol=1e-5)
  np.testing.assert_allclose(metrics["mse"], np.mean(diff ** 2), rtol=1e-5)
  with pytest.raises(ValueError, match="reconstruction='l3'"):
    losses.reconstruction_kl_loss(recon, x, mean, logvar, 0.01, reconstruction="l3")


def test_small_autoencoder_training_steps_reduce_the_loss():
  model = AutoencoderKL(**SMALL_VAE)
  # Random smooth images (4×4 noise, bilinearly upsampled): what the f = 2 latent can hold.
  low = _images((4, 4, 4, 3), 5)
  x = jax.image.resize(jnp.asarray(low), (4, 16, 16, 3), "linear")
  params = _random_params(model, perturb=False)
  optimizer = optax.adam(5e-4)
  opt_state = optimizer.init(params)

  def loss_fn(params, key):
    recon, mean, logvar = model.apply({"params": params}, x, rngs={"sample": key})
    return losses.reconstruction_kl_loss(recon, x, mean, logvar, kl_weight=1e-3)[0]

  @jax.jit
  def step(params, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = []
  for key in jax.random.split(jax.random.key(0), 25):
    params, opt_state, loss = step(params, opt_state, key)
    history.append(float(loss))
  assert np.all(np.isfinite(history))
  assert np.mean(history[-3:]) < 0.6 * history[0], history  # ≈ 0.45 (339 → 152)
