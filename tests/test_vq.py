"""VQ image tokenizers: the quantizer (effcomp.nn.vector_quantize), LlamaGen's VQModel
(effcomp.models.vq), its checkpoint converter against a torch forward written from
LlamaGen's `vq_model.py`, and the `vq` task."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effcomp import config as config_lib
from effcomp import runs
from effcomp.convert import llamagen_vq, state_dict
from effcomp.models.vq import VQModel, patchgan
from effcomp.nn import vector_quantize as vq
from effcomp.runs import convert
from effcomp.tasks import vq as vq_task
from effcomp.train import metrics_writer, sharding

TINY = dict(in_channels=3, out_channels=3, channels=8, ch_mult=(1, 2), num_res_blocks=1,
            z_channels=8, codebook_size=16, codebook_embed_dim=4, norm_num_groups=4)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_codebook_vectors_round_trip_exactly(l2_norm):
  codebook = jax.random.normal(jax.random.key(0), (32, 8))
  codes = vq.lookup_codebook(codebook, l2_norm)
  order = jax.random.permutation(jax.random.key(1), 32)
  z = codes[order].reshape(4, 8, 8)
  z_q, indices, losses = vq.quantize(z, codebook, l2_norm=l2_norm)
  np.testing.assert_array_equal(indices.reshape(-1), order)
  np.testing.assert_array_equal(z_q, z)
  assert float(losses["codebook"]) == pytest.approx(0.0, abs=1e-10)


def test_straight_through_gradient_and_loss_values():
  rng = np.random.default_rng(0)
  z, codebook = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(
      np.float32)
  w = rng.normal(size=(5, 3)).astype(np.float32)
  # Without normalization the gradient of Σ w·z_q wrt z is w itself (straight through) …
  grad = jax.grad(lambda z: jnp.sum(vq.quantize(z, codebook, l2_norm=False)[0] * w))(z)
  np.testing.assert_allclose(grad, w, rtol=1e-6)
  # … with it, the gradient of the normalization (z_q stands in for z / ‖z‖).
  grad = jax.grad(lambda z: jnp.sum(vq.quantize(z, codebook)[0] * w))(z)
  np.testing.assert_allclose(grad, jax.grad(lambda z: jnp.sum(vq.normalize(z) * w))(z),
                             rtol=1e-5)
  d = ((z[:, None] - codebook[None]) ** 2).sum(-1)
  nearest = codebook[d.argmin(1)]
  z_q, indices, losses = vq.quantize(z, codebook, beta=0.25, l2_norm=False)
  np.testing.assert_array_equal(indices, d.argmin(1))
  np.testing.assert_allclose(losses["codebook"], ((nearest - z) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(losses["commitment"], 0.25 * ((nearest - z) ** 2).mean(), rtol=1e-5)
  # Codebook loss moves the codes only, commitment loss the encoder output only.
  g_codes = jax.grad(lambda c: vq.quantize(z, c, l2_norm=False)[2]["codebook"])(codebook)
  g_z = jax.grad(lambda z: vq.quantize(z, codebook, l2_norm=False)[2]["codebook"])(z)
  assert np.abs(g_codes).sum() > 0 and np.abs(g_z).sum() == 0


def test_entropy_loss_and_usage_against_numpy():
  rng = np.random.default_rng(1)
  d = rng.uniform(0, 0.1, size=(6, 5))
  p = np.exp(-d / 0.01 - (-d / 0.01).max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  logp = np.log(np.exp(-d / 0.01 + 1e-5) / np.exp(-d / 0.01 + 1e-5).sum(1, keepdims=True))
  mean = p.mean(0)
  want = -(p * logp).sum(1).mean() + (mean * np.log(mean + 1e-5)).sum()
  np.testing.assert_allclose(vq.entropy_loss(jnp.asarray(d, jnp.float32)), want, rtol=1e-4)
  indices = jnp.array([[0, 0, 3], [3, 1, 0], [7, 7, 7]])
  counts = vq.code_counts(indices, 8, mask=jnp.array([True, True, False]))
  np.testing.assert_array_equal(counts, [3, 1, 0, 2, 0, 0, 0, 0])
  assert float(vq.usage(counts)) == 3 / 8
  freq = np.array([3, 1, 2]) / 6
  np.testing.assert_allclose(vq.perplexity(counts), np.exp(-(freq * np.log(freq)).sum()), rtol=1e-6)
  assert float(vq.perplexity(jnp.full((4,), 5.0))) == pytest.approx(4.0)


def _torch_forward(sd, x, model):
  """LlamaGen `VQModel.encode` + `decode` (tokenizer/tokenizer_image/vq_model.py) written with
  torch functional ops over the state dict `sd`: (indices, reconstruction), NCHW."""
  t = {k: torch.from_numpy(v) for k, v in sd.items()}
  conv = lambda h, n, pad=1, stride=1: F.conv2d(h, t[n + ".weight"], t[n + ".bias"], stride, pad)
  norm = lambda h, n: F.group_norm(h, model.norm_num_groups, t[n + ".weight"], t[n + ".bias"],
                                   eps=1e-6)

  def res(h, n):
    y = conv(F.silu(norm(conv(F.silu(norm(h, n + ".norm1")), n + ".conv1"), n + ".norm2")),
             n + ".conv2")
    return (conv(h, n + ".nin_shortcut", 0) if n + ".nin_shortcut.weight" in t else h) + y

  def attn(h, n):
    b, c, hh, ww = h.shape
    y = norm(h, n + ".norm")
    q, k, v = (conv(y, f"{n}.{p}", 0).reshape(b, c, -1) for p in "qkv")
    w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * c ** -0.5, dim=2)
    return h + conv(torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww), n + ".proj_out", 0)

  def blocks(h, prefix, n_levels, n_res, resample):
    for i in range(n_levels):
      for j in range(n_res):
        h = res(h, f"{prefix}.conv_blocks.{i}.res.{j}")
        if f"{prefix}.conv_blocks.{i}.attn.{j}.q.weight" in t:
          h = attn(h, f"{prefix}.conv_blocks.{i}.attn.{j}")
      if i != n_levels - 1:
        h = resample(h, f"{prefix}.conv_blocks.{i}")
    return h

  def mid(h, prefix):
    return res(attn(res(h, prefix + ".mid.0"), prefix + ".mid.1"), prefix + ".mid.2")

  levels = len(model.ch_mult)
  h = conv(torch.from_numpy(x).permute(0, 3, 1, 2), "encoder.conv_in")
  h = blocks(h, "encoder", levels, model.num_res_blocks,
             lambda h, n: conv(F.pad(h, (0, 1, 0, 1)), n + ".downsample.conv", 0, 2))
  h = conv(F.silu(norm(mid(h, "encoder"), "encoder.norm_out")), "encoder.conv_out")
  z = F.normalize(conv(h, "quant_conv", 0).permute(0, 2, 3, 1), dim=-1)
  e = F.normalize(t["quantize.embedding.weight"], dim=-1)
  d = (z ** 2).sum(-1, keepdim=True) + (e ** 2).sum(1) - 2 * z @ e.T
  indices = d.argmin(-1)
  h = conv(e[indices].permute(0, 3, 1, 2), "post_quant_conv", 0)
  h = mid(conv(h, "decoder.conv_in"), "decoder")
  h = blocks(h, "decoder", levels, model.num_res_blocks + 1,
             lambda h, n: conv(F.interpolate(h, scale_factor=2.0, mode="nearest"),
                               n + ".upsample.conv"))
  h = conv(F.silu(norm(h, "decoder.norm_out")), "decoder.conv_out")
  return indices.numpy(), h.permute(0, 2, 3, 1).numpy()


def test_llamagen_checkpoint_loads_and_matches_its_forward(tmp_path):
  model = VQModel(**TINY)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  variables = nn.unbox(model.init(jax.random.key(0), x))
  # Larger-than-init weights so every block matters, codes spread over the sphere.
  variables = jax.tree.map(lambda a: a + 0.2 * np.random.default_rng(a.size).normal(
      size=a.shape).astype(np.float32), variables)
  sd = state_dict.to_state_dict(variables, llamagen_vq.name_map(model))
  assert "encoder.conv_blocks.1.attn.0.proj_out.weight" in sd and sd[
      "encoder.conv_blocks.1.attn.0.q.weight"].shape == (16, 16, 1, 1)
  assert "decoder.conv_blocks.0.attn.1.q.weight" in sd and "decoder.conv_blocks.1.attn.0.q.weight" \
      not in sd
  assert "decoder.conv_blocks.0.upsample.conv.weight" in sd and sd[
      "encoder.conv_blocks.1.res.0.nin_shortcut.weight"].shape == (16, 8, 1, 1)
  assert sd["quantize.embedding.weight"].shape == (16, 4)
  want_idx, want_recon = _torch_forward(sd, x, model)
  recon, indices, _ = model.apply(variables, x)
  np.testing.assert_array_equal(indices, want_idx)
  np.testing.assert_allclose(recon, want_recon, atol=2e-5)
  # As LlamaGen's training script saves it, with its usage buffer.
  path = str(tmp_path / "vq.pt")
  torch.save({"model": {**{k: torch.from_numpy(v) for k, v in sd.items()},
                        "quantize.codebook_used": torch.zeros(65536)}, "steps": 3}, path)
  config = config_lib.load("configs/vq_tokenizer.py:data=photos", **{
      f"model.{k}": v for k, v in TINY.items()})
  report = convert.import_checkpoint("llamagen_vq", path, config, str(tmp_path / "run"))
  assert report.unused == llamagen_vq.UNUSED and not report.unfilled
  run = runs.open(str(tmp_path / "run"))
  np.testing.assert_array_equal(run.model.apply(run.variables, x, method="tokenize"), want_idx)
  # A config that fine-tunes with the PatchGAN term: its discriminator starts fresh.
  report = convert.import_checkpoint("llamagen_vq", path, config_lib.load(
      "configs/vq_tokenizer.py:data=photos,gan", **{f"model.{k}": v for k, v in TINY.items()}),
      str(tmp_path / "gan"))
  assert report.unfilled and all(vq_task.DISCRIMINATOR in u for u in report.unfilled)
  run = runs.open(str(tmp_path / "gan"))
  assert vq_task.DISCRIMINATOR in run.params and "batch_stats" in run.variables
  np.testing.assert_array_equal(run.model.apply(run.variables, x, method="tokenize"), want_idx)
  with pytest.raises(ValueError, match="wrong shape"):
    convert.import_checkpoint("llamagen_vq", path, config_lib.load(
        "configs/vq_tokenizer.py:data=photos", **{
            **{f"model.{k}": v for k, v in TINY.items()}, "model.codebook_size": 32}),
        str(tmp_path / "bad"))


def test_model_api_shapes_names_and_errors():
  model = VQModel(**TINY)
  x = jnp.zeros((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  leaves = jax.tree.leaves(variables, is_leaf=lambda p: isinstance(p, nn.Partitioned))
  assert {n for p in leaves for n in p.names} <= {name for name, _ in sharding.LOGICAL_RULES}
  codebook = nn.unbox(variables)["params"]["codebook"]
  np.testing.assert_allclose(np.linalg.norm(codebook, axis=-1), 1.0, rtol=1e-5)
  recon, indices, losses = model.apply(variables, x)
  assert recon.shape == x.shape and indices.shape == (2, 4, 4) and indices.dtype == jnp.int32
  assert set(losses) == {"codebook", "commitment", "entropy"}
  np.testing.assert_allclose(model.apply(variables, indices, method="decode_code"), recon,
                             atol=1e-6)
  with pytest.raises(ValueError, match="multiples of 2"):
    model.apply(variables, jnp.zeros((1, 7, 8, 3)), method="encode")
  with pytest.raises(ValueError, match="norm_num_groups=3"):
    VQModel(**{**TINY, "norm_num_groups": 3}).init(jax.random.key(0), x)


def test_vq_task_trains_and_reports_codebook_usage(vq_digits):
  workdir, summary = vq_digits
  ev = summary["eval"]
  assert 0 < ev["usage"] <= 1 and 1 <= ev["perplexity"] <= 256, ev
  assert ev["psnr"] > 10, ev  # digits are mostly background: even a blurry decode beats 10 dB
  losses = [r["train/loss"] for r in metrics_writer.read_jsonl(
      os.path.join(workdir, "metrics.jsonl")) if "train/loss" in r]
  assert losses[-1] < losses[0], losses
  with pytest.raises(ValueError, match="reconstruction='l3'"):
    runs.build_task(config_lib.load("configs/vq_tokenizer.py", **{"task.reconstruction": "l3"}))
  with pytest.raises(ValueError, match="perceptual_encoder"):
    runs.build_task(config_lib.load("configs/vq_tokenizer.py", **{"task.perceptual_weight": 1.0}))


def _torch_patchgan(variables, x, n_layers, train):
  """LlamaGen's `NLayerDiscriminator` (discriminator_patchgan.py) written with torch
  functional ops over effcomp's variables: (logits NHWC, {norm: running mean})."""
  p, stats = variables["params"], variables["batch_stats"]
  t = lambda a: torch.from_numpy(np.asarray(a).copy())
  conv = lambda h, n, stride: F.conv2d(h, t(p[n]["kernel"]).permute(3, 2, 0, 1),
                                       t(p[n]["bias"]) if "bias" in p[n] else None, stride, 1)
  h = F.leaky_relu(conv(torch.from_numpy(x).permute(0, 3, 1, 2), "conv_0", 2), 0.2)
  means = {}
  for n in range(1, n_layers + 1):
    h = conv(h, f"conv_{n}", 2 if n < n_layers else 1)
    name = f"norm_{n}"
    mean, var = t(stats[name]["mean"]), t(stats[name]["var"])
    h = F.batch_norm(h, mean, var, t(p[name]["scale"]), t(p[name]["bias"]), training=train,
                     momentum=0.1, eps=1e-5)
    h, means[name] = F.leaky_relu(h, 0.2), mean.numpy()
  return conv(h, "logits", 1).permute(0, 2, 3, 1).numpy(), means


@pytest.mark.parametrize("train", [True, False])
def test_patchgan_matches_llamagen_forward(train):
  model = patchgan.PatchGANDiscriminator(ndf=8, n_layers=2)
  x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
  variables = nn.unbox(model.init(jax.random.key(0), x))
  conv_0 = variables["params"]["conv_0"]["kernel"]
  assert abs(float(np.std(conv_0)) - 0.02) < 0.004 and "bias" not in variables["params"]["conv_1"]
  # Non-trivial statistics and norms, so the eval path is tested on something.
  variables = jax.tree.map(lambda a: a + 0.3 * np.random.default_rng(a.size).uniform(
      size=a.shape).astype(np.float32), variables)
  logits, new = model.apply(variables, x, train=train, mutable=["batch_stats"])
  want, torch_means = _torch_patchgan(variables, x, 2, train)
  assert logits.shape == (3, 2, 2, 1)  # 16 / 2² − 2
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  for name, mean in torch_means.items():  # running means move as torch's (0.1 of the batch's)
    np.testing.assert_allclose(new["batch_stats"][name]["mean"], mean, atol=1e-6)
  with pytest.raises(ValueError, match="side at least 12"):
    model.apply(variables, x[:, :8, :8], train=False)


def test_vq_task_gan_term_starts_at_disc_start_and_moves_each_network_by_its_loss():
  config = config_lib.load("configs/vq_tokenizer.py:data=photos,gan,steps=10", **{
      f"model.{k}": v for k, v in TINY.items()})
  assert config.task.gan_weight == 0.5 and config.task.disc_start == 5
  task = runs.build_task(config)
  batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8),
           "mask": np.ones(4, bool)}
  variables = jax.jit(task.init_fn)(jax.random.key(0), batch)
  params, state = nn.unbox(variables["params"]), {"batch_stats": variables["batch_stats"]}
  assert set(params) >= {"codebook", vq_task.DISCRIMINATOR}

  @jax.jit
  def grads(step):
    (_, (new_state, metrics)), g = jax.value_and_grad(task.loss_fn, has_aux=True)(
        params, state, batch, jax.random.key(1), None, step)
    return vq_task.split_params(g), new_state, metrics

  norm = lambda tree: float(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))
  (tok_0, disc_0), state_0, m_0 = grads(jnp.int32(4))
  (_, disc_5), _, m_5 = grads(jnp.int32(5))
  assert norm(tok_0) > 0
  assert float(m_0["gan_weight"]) == 0.0 and float(m_5["gan_weight"]) == 0.5
  assert {"gan", "disc", "d_real", "d_fake"} <= set(m_5)
  assert norm(disc_0) == 0.0 and norm(disc_5) > 0.0  # the discriminator learns from then on
  # What starts at disc_start moves the tokenizer by the generator's term only,
  # 0.5 · ∇(−mean D(recon)) (the discriminator's term sees the reconstructions stopped).
  loss_at = lambda p, step: task.loss_fn(p, state, batch, jax.random.key(1), None,
                                         jnp.int32(step))[0]
  delta = vq_task.split_params(jax.jit(jax.grad(lambda p: loss_at(p, 5) - loss_at(p, 4)))(
      params))[0]
  disc = vq_task.discriminator(config.task)

  def gen_loss(p):
    x = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    recon = task.model.apply({"params": p}, x)[0]
    logits = disc.apply({"params": params[vq_task.DISCRIMINATOR], **state}, recon, train=True,
                        mutable=["batch_stats"])[0]
    return -0.5 * jnp.mean(logits)

  want = jax.jit(jax.grad(gen_loss))(vq_task.split_params(params)[0])
  for a, b in zip(jax.tree.leaves(delta), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()) + 1e-9)
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state_0["batch_stats"],
                       state["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0  # BatchNorm statistics move even before disc_start
  with pytest.raises(ValueError, match="gan_weight=-1"):
    runs.build_task(config_lib.load("configs/vq_tokenizer.py", **{"task.gan_weight": -1.0}))
