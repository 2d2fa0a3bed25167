"""ElasticDiT's Tiny DWT-Distilled VAE: Haar packets (effcomp.nn.haar), the wavelet losses
(effcomp.losses.wavelet), the tiny autoencoder (effcomp.models.vae.tiny), its distillation
(the autoencoder task with distill=True) and its place in latent diffusion."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp import runs
from effcomp.losses import wavelet
from effcomp.models.vae import SD_TINY_VAE, SD_VAE, AutoencoderKL, TinyVAE
from effcomp.nn import haar
from effcomp.runs import reconstruction
from effcomp.tasks import diffusion
from effcomp.train import sharding

RUN = {"train.progress_bar": False, "train.eval_every": 0, "checkpoint.async_save": False,
       "eval.batch_size": 120}


def _numpy_haar(x: np.ndarray):
  """One Haar level of x [H, W] as matrix products: rows then columns filtered by the
  orthonormal pairs (1, 1)/√2 and (1, −1)/√2 → ll, lh (rows differ), hl, hh."""
  def analysis(n):
    low, high = np.zeros((n // 2, n)), np.zeros((n // 2, n))
    for i in range(n // 2):
      low[i, 2 * i:2 * i + 2] = (1, 1)
      high[i, 2 * i:2 * i + 2] = (1, -1)
    return low / np.sqrt(2), high / np.sqrt(2)
  (lr, hr), (lc, hc) = analysis(x.shape[0]), analysis(x.shape[1])
  return lr @ x @ lc.T, (hr @ x @ lc.T, lr @ x @ hc.T, hr @ x @ hc.T)


def test_haar_packets_and_wavedec_reconstruct_perfectly_and_keep_energy():
  x = np.random.default_rng(0).normal(size=(2, 16, 8, 3)).astype(np.float32)

  @jax.jit  # one compile instead of one per eager op
  def transforms(x):
    y = haar.haar_packets(x, 2)
    ll, details = haar.haar_wavedec(x, 3)
    for level_details in reversed(details):  # multi-level: invert level by level
      ll = haar.haar_idwt(ll, level_details)
    return y, haar.inverse_haar_packets(y, 2), ll

  y, back, ll = transforms(x)
  assert y.shape == (2, 4, 2, 48)
  np.testing.assert_allclose(back, x, atol=1e-5)
  np.testing.assert_allclose(np.sum(np.square(y)), np.sum(np.square(x)), rtol=1e-5)
  np.testing.assert_allclose(ll, x, atol=1e-5)
  coarsest, details = jax.eval_shape(lambda x: haar.haar_wavedec(x, 3), x)
  assert coarsest.shape == (2, 2, 1, 3) and [d[0].shape for d in details] == [
      (2, 8, 4, 3), (2, 4, 2, 3), (2, 2, 1, 3)]
  assert haar.haar_packets(x, 0) is x
  with pytest.raises(ValueError, match="divisible by 4"):
    haar.inverse_haar_packets(y[..., :6], 2)


def test_subband_l1_and_weighted_loss_match_numpy():
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 8, 8, 3)), rng.normal(size=(2, 8, 8, 3))
  bands = jax.jit(wavelet.subband_l1, static_argnums=2)(pred.astype(np.float32),
                                                        target.astype(np.float32), 2)
  assert set(bands) == {"lh1", "hl1", "hh1", "lh2", "hl2", "hh2", "ll2"}
  weights = (1.0, 2.0, 3.0, 5.0)  # distinct per band, so a swapped band shows
  want_total = np.zeros(2)
  for b in range(2):
    want = {}
    ll = pred[b] - target[b]  # the transform is linear: bands of the difference
    for level in (1, 2):
      per_channel = [_numpy_haar(ll[..., ch]) for ch in range(3)]
      ll = np.stack([p[0] for p in per_channel], -1)
      for k, name in enumerate(("lh", "hl", "hh")):
        want[f"{name}{level}"] = np.abs(np.stack([p[1][k] for p in per_channel], -1)).sum()
    want["ll2"] = np.abs(ll).sum()
    for name, value in want.items():
      np.testing.assert_allclose(bands[name][b], value, rtol=1e-5)
      want_total[b] += dict(zip(wavelet.BANDS, weights))[name[:2]] * value
  got = jax.jit(wavelet.wavelet_l1, static_argnums=(2, 3))(pred, target, 2, weights)
  np.testing.assert_allclose(got, want_total, rtol=1e-5)
  # A constant offset of c lives in the coarsest LL only: 2^levels · c per pixel of it.
  flat = wavelet.subband_l1(jnp.full((1, 4, 4, 1), 0.5), jnp.zeros((1, 4, 4, 1)), 2)
  assert float(flat["ll2"][0]) == pytest.approx(2.0) and float(flat["hh1"][0]) == 0.0
  with pytest.raises(ValueError, match="divisible by 2\\^levels = 8"):
    wavelet.subband_l1(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 1)), 3)
  with pytest.raises(ValueError, match="one per band"):
    wavelet.wavelet_l1(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 1)), 1, (1.0, 1.0))


def test_latent_l2_is_on_the_teachers_scale():
  mean, teacher = jnp.ones((2, 2, 2, 4)), jnp.zeros((2, 2, 2, 4))
  np.testing.assert_allclose(wavelet.latent_l2(mean, teacher, 0.5), [4.0, 4.0])
  with pytest.raises(ValueError, match="teacher's shape"):
    wavelet.latent_l2(mean, teacher[..., :2])


@pytest.mark.parametrize("data", ["digits", "photos"])
def test_tiny_vae_latents_match_the_kl_autoencoders_and_cost_at_most_an_eighth(data):
  teacher = runs.build_model(config_lib.load(f"configs/autoencoder_small.py:data={data}").model,
                             "float32")
  student = runs.build_model(config_lib.load(f"configs/tiny_vae.py:data={data}").model,
                             "float32")
  assert isinstance(student, TinyVAE)
  side = {"digits": 16, "photos": 64}[data]
  x = jnp.zeros((2, side, side, teacher.in_channels))

  def shapes(model):
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0),
                                                   "sample": jax.random.key(0)}, x))
    mean, logvar = jax.eval_shape(lambda v: model.apply(v, x, method="encode"), variables)
    recon = jax.eval_shape(lambda v, z: model.apply(v, z, method="decode"), variables, mean)
    return mean.shape, logvar.shape, recon.shape

  assert shapes(student) == shapes(teacher) == (
      (2, side // 2, side // 2, 4), (2, side // 2, side // 2, 4), x.shape)
  assert student.downsampling_factor == teacher.downsampling_factor == 2
  tiny = reconstruction.autoencoder_macs(student, x.shape[1:])
  full = reconstruction.autoencoder_macs(teacher, x.shape[1:])
  assert tiny["total"] <= full["total"] / 8, (tiny, full)
  assert tiny["decode"] <= full["decode"] / 8 and tiny["encode"] <= full["encode"] / 8


def test_sd_sized_tiny_vae_costs_at_most_an_eighth_of_the_sd_vae_at_256():
  tiny = reconstruction.autoencoder_macs(TinyVAE(**SD_TINY_VAE), (256, 256, 3))
  full = reconstruction.autoencoder_macs(AutoencoderKL(**SD_VAE), (256, 256, 3))
  assert TinyVAE(**SD_TINY_VAE).downsampling_factor == 8
  assert tiny["total"] <= full["total"] / 8, (tiny, full)


def test_params_are_logically_named_and_the_config_is_checked():
  model = TinyVAE(in_channels=1, out_channels=1, block_out_channels=(8, 16), dwt_levels=1)
  assert model.downsampling_factor == 4
  x = jnp.zeros((1, 8, 8, 1))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample_posterior=False))
  leaves = jax.tree.leaves(params, is_leaf=lambda p: isinstance(p, nn.Partitioned))
  assert leaves and all(isinstance(p, nn.LogicallyPartitioned) for p in leaves)
  assert {n for p in leaves for n in p.names} <= {name for name, _ in sharding.LOGICAL_RULES}
  recon, mean, _ = jax.eval_shape(
      lambda p: model.apply(p, x, sample_posterior=False), params)
  assert mean.shape == (1, 2, 2, 4) and recon.shape == x.shape
  with pytest.raises(ValueError, match="divisible by the downsampling factor 4"):
    jax.eval_shape(lambda p: model.apply(p, jnp.zeros((1, 6, 8, 1)), method="encode"), params)
  for field, value in (("dwt_levels", -1), ("decoder_blocks", 0), ("block_out_channels", ())):
    bad = TinyVAE(**{field: value})
    with pytest.raises(ValueError, match=field):
      jax.eval_shape(lambda m=bad: m.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3))))


@pytest.mark.slow  # end to end, ≈ 45 s: make test-slow
def test_distillation_trains_and_the_student_is_a_latent_diffusion_autoencoder(tmp_path,
                                                                                data_dir):
  del data_dir
  teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
  runs.train(config_lib.load("configs/autoencoder_small.py:data=digits,steps=2",
                             **{**RUN, "train.batch_size": 8}), teacher_dir)
  with pytest.raises(ValueError, match="needs a teacher"):
    runs.build_task(config_lib.load("configs/tiny_vae.py:data=digits"))
  with pytest.raises(ValueError, match="config.model.latent_channels=3"):
    runs.build_task(config_lib.load(f"configs/tiny_vae.py:data=digits,teacher={teacher_dir}",
                                    **{"model.latent_channels": 3}))
  config = config_lib.load(f"configs/tiny_vae.py:data=digits,teacher={teacher_dir},steps=2",
                           **{**RUN, "train.batch_size": 8, "train.log_every": 1})
  summary = runs.train(config, student_dir)
  ev = summary["eval"]
  assert all(np.isfinite(ev[k]) for k in ("loss", "psnr", "teacher_psnr", "latent_mse")), ev
  # A latent diffusion config takes the student run as its autoencoder: the trainer's
  # teacher slot restores it, and its latents have the denoiser's shape.
  dit = config_lib.load(f"configs/diffusion_digits.py:autoencoder={student_dir}",
                        **{"model.hidden_size": 32, "model.depth": 2, "model.num_heads": 2})
  task = runs.build_task(dit)
  assert isinstance(task.teacher_init_fn(jax.random.key(0), {"image": np.zeros(
      (1, 8, 8, 1), np.uint8)})["params"], dict)
  vae = runs.open(student_dir)
  assert isinstance(vae.model, TinyVAE)
  x = diffusion.to_model_space(jnp.zeros((3, 8, 8, 1), jnp.uint8), dit.task.image_size)
  z = diffusion.encode(vae.model, vae.variables, x, diffusion.latent_scale(dit.task, vae.model))
  assert z.shape == (3, dit.model.input_size, dit.model.input_size, dit.model.in_channels)
  images = diffusion.decode_to_images(vae.model, vae.variables, z, 1.0)
  assert images.shape == (3, 16, 16, 1) and images.dtype == jnp.uint8
  rows = reconstruction.compare(teacher_dir, student_dir, max_images=20)
  assert [r["images"] for r in rows] == [20, 20] and rows[1]["macs_ratio"] <= 1 / 8
