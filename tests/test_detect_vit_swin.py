"""The transformer detectors, DeiT (a ViT) and Swin, against transformers'
`ViTForImageClassification` and `SwinForImageClassification` on the same (random)
weights, and their paper-size parameter counts (timm's deit_small_patch16_224 and
swin_tiny_patch4_window7_224)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from effcomp.models.detect import swin, vit


def _num_params(model, image_size=224):
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3), jnp.float32)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(variables["params"])))


def test_deit_small_has_timms_parameter_count():
  # timm deit_small_patch16_224: 22,050,664 parameters with the 1000-class head.
  assert _num_params(vit.DeiT(num_classes=1000, **vit.DEIT_S)) == 22_050_664


def test_swin_tiny_has_timms_parameter_count():
  # timm swin_tiny_patch4_window7_224: 28,288,354 with 1000 classes, of which the relative
  # position index buffers are not parameters; the bias tables (169 × heads per layer) are.
  assert _num_params(swin.Swin(num_classes=1000, **swin.SWIN_T)) == 28_288_354


def _linear(layer):
  """torch Linear → {kernel [in, out], bias}."""
  out = {"kernel": layer.weight.detach().numpy().T}
  if layer.bias is not None:
    out["bias"] = layer.bias.detach().numpy()
  return out


def _norm(layer):
  return {"scale": layer.weight.detach().numpy(), "bias": layer.bias.detach().numpy()}


def _conv(layer):
  return {"kernel": layer.weight.detach().numpy().transpose(2, 3, 1, 0),
          "bias": layer.bias.detach().numpy()}


def _randomize(module, seed):
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.normal_(0.0, 0.2)
  return module.eval()


def _compare(ours, params, theirs, x):
  expected = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.detach().numpy()
  got = np.asarray(ours.apply({"params": params}, jnp.asarray(x)))
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)
  return got


def test_deit_equals_transformers_vit_on_the_same_weights():
  config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                  intermediate_size=192, image_size=16, patch_size=4,
                                  layer_norm_eps=1e-6, num_labels=2)
  hf = _randomize(transformers.ViTForImageClassification(config), 0)
  emb, layers = hf.vit.embeddings, hf.vit.layers
  params = {
      "patch_embed": _conv(emb.patch_embeddings.projection),
      "cls_token": emb.cls_token.detach().numpy()[0, 0],
      "pos_embed": emb.position_embeddings.detach().numpy()[0],
      "blocks": {f"layers_{i}": {
          "layer_norm1": _norm(layer.layernorm_before),
          "self_attn": {f"{n}_proj": _linear(getattr(layer.attention, f"{n}_proj"))
                        for n in "qkv"} | {"out_proj": _linear(layer.attention.o_proj)},
          "layer_norm2": _norm(layer.layernorm_after),
          "mlp": {"fc1": _linear(layer.mlp.fc1), "fc2": _linear(layer.mlp.fc2)},
      } for i, layer in enumerate(layers)},
      "norm": _norm(hf.vit.layernorm),
      "head": _linear(hf.classifier),
  }
  ours = vit.DeiT(num_classes=2, patch_size=4, embed_dim=48, depth=2, num_heads=3)
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  abstract = nn.unbox(jax.eval_shape(ours.init, jax.random.key(0), jnp.asarray(x)))["params"]
  assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, params)
  _compare(ours, params, hf, x)


def _swin_params(hf):
  emb, stages = hf.swin.embeddings, hf.swin.encoder.layers
  params = {"patch_embed": _conv(emb.patch_embeddings.projection), "patch_norm": _norm(emb.norm),
            "norm": _norm(hf.swin.layernorm), "head": _linear(hf.classifier)}
  for i, stage in enumerate(stages):
    for j, block in enumerate(stage.blocks):
      attn = block.attention
      qkv = [_linear(getattr(attn, f"{n}_proj")) for n in "qkv"]
      params[f"stage{i}_block{j}"] = {
          "norm1": _norm(block.layernorm_before),
          "attn": {"qkv": {"kernel": np.concatenate([q["kernel"] for q in qkv], axis=1),
                           "bias": np.concatenate([q["bias"] for q in qkv])},
                   "proj": _linear(attn.o_proj),
                   "relative_position_bias_table":
                       attn.relative_position_bias.relative_position_bias_table.detach().numpy()},
          "norm2": _norm(block.layernorm_after),
          "fc1": _linear(block.mlp.fc1), "fc2": _linear(block.mlp.fc2)}
    if stage.downsample is not None:
      params[f"stage{i}_merge_norm"] = _norm(stage.downsample.norm)
      params[f"stage{i}_merge"] = _linear(stage.downsample.reduction)
  return params


@pytest.mark.parametrize("image_size, window", [(16, 4), (32, 4)])
def test_swin_equals_transformers_swin_on_the_same_weights(image_size, window):
  # 16×16: an 8×8 map of windows 4 (shifted by 2), then 4×4 = one window, no shift (the
  # clamping rule); 32×32: 16×16 then 8×8, both shifted.
  config = transformers.SwinConfig(image_size=image_size, patch_size=2, embed_dim=24,
                                   depths=[2, 2], num_heads=[2, 4], window_size=window,
                                   drop_path_rate=0.0, num_labels=2)
  hf = _randomize(transformers.SwinForImageClassification(config), 1)
  ours = swin.Swin(num_classes=2, patch_size=2, embed_dim=24, depths=(2, 2), num_heads=(2, 4),
                   window_size=window, drop_path=0.0)
  x = np.random.default_rng(1).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
  params = _swin_params(hf)
  abstract = nn.unbox(jax.eval_shape(ours.init, jax.random.key(0), jnp.asarray(x)))["params"]
  assert jax.tree.map(np.shape, abstract) == jax.tree.map(np.shape, params)
  _compare(ours, params, hf, x)


def test_patch_merge_channel_order_is_the_officials():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  got = np.asarray(swin.patch_merge(jnp.asarray(x)))
  expected = np.concatenate([x[:, r::2, c::2] for c in range(2) for r in range(2)], axis=-1)
  np.testing.assert_array_equal(got, expected)
  with pytest.raises(ValueError, match="even"):
    swin.patch_merge(jnp.zeros((1, 3, 4, 2)))


def test_detectors_reject_images_of_the_wrong_size():
  with pytest.raises(ValueError, match="patch_size"):
    vit.DeiT(patch_size=4, embed_dim=12, depth=1, num_heads=3).init(
        jax.random.key(0), jnp.zeros((1, 18, 18, 3)))
  with pytest.raises(ValueError, match="divisible"):
    swin.Swin(patch_size=2, embed_dim=12, depths=(1, 1), num_heads=(3, 3), window_size=4).init(
        jax.random.key(0), jnp.zeros((1, 18, 18, 3)))
