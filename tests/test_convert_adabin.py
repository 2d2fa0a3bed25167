"""Official AdaBin checkpoints → effcomp (effcomp.convert.adabin) and the shared state-dict
machinery (effcomp.convert.state_dict): key layout, exact round trips, reports and errors.
No official code is imported: the tests write checkpoints in the official layout."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import numpy as safetensors_np

from effcomp import runs
from effcomp.convert import adabin, state_dict
from effcomp.convert.state_dict import CONV, LINEAR

COMPAT = dict(method="adabin", adabin_act_form="official", progressive=False)


def _model(name="bnn_resnet20", **fields):
  return runs.build_model(ml_collections.ConfigDict({"name": name, **COMPAT, **fields}), "float32")


def _random(model, size=32, seed=0):
  x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)  # shapes only: no forward pass
  leaves, tree = jax.tree.flatten(nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x)))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [np.abs(jax.random.normal(k, v.shape)) + 0.1 for k, v in
                                   zip(keys, leaves)])


def _resnet20_keys():
  """The official resnet20_1w1a's state-dict keys (cifar10/nets/resnet20.py), without
  BatchNorm's num_batches_tracked."""
  bn = lambda n: [f"{n}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]
  maxout = lambda n: [f"{n}.neg_scale", f"{n}.pos_scale"]
  keys = ["conv1.weight", *bn("bn1"), *maxout("nonlinear1"), *bn("bn2"), "linear.weight",
          "linear.bias"]
  for layer in (1, 2, 3):
    for block in range(3):
      p = f"layer{layer}.{block}"
      for i in (1, 2):
        keys += [f"{p}.conv{i}.weight", f"{p}.conv{i}.binary_a.alpha_a",
                 f"{p}.conv{i}.binary_a.beta_a", *bn(f"{p}.bn{i}"), *maxout(f"{p}.nonlinear{i}")]
  return set(keys)


def _save_official(tensors, path, prefix="module."):
  """As the official training script does: {'state_dict': DataParallel's keys, ...}."""
  sd = {prefix + k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
  torch.save({"state_dict": sd, "best_prec1": torch.tensor(88.0)}, path)


def test_resnet20_round_trips_through_an_official_checkpoint_file(tmp_path):
  model = _model()
  variables = _random(model)
  tensors = state_dict.to_state_dict(variables, adabin.name_map(model))
  assert set(tensors) == _resnet20_keys()
  assert tensors["conv1.weight"].shape == (16, 3, 3, 3) and tensors["linear.weight"].shape == (10, 64)
  assert tensors["layer1.0.conv1.binary_a.alpha_a"].shape == ()
  tensors["bn1.num_batches_tracked"] = np.array(7)
  _save_official(tensors, tmp_path / "model.th")
  read = state_dict.read(str(tmp_path / "model.th"))
  assert "layer2.0.conv1.weight" in read  # module. stripped, state_dict unwrapped
  template = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  converted, report = state_dict.from_state_dict(read, template, adabin.name_map(model))
  assert report.unused == ("bn1.num_batches_tracked",) and report.unfilled == ()
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  assert model.apply(converted, np.ones((2, 32, 32, 3), np.float32)).shape == (2, 10)


def test_the_stem_computes_the_official_layers_from_official_tensors():
  """conv1 (OIHW) → BatchNorm (eval) → Maxout, in torch from the state dict, against the
  converted model's stem output."""
  model = _model()
  variables = _random(model)
  t = {k: torch.from_numpy(np.array(v)) for k, v in
       state_dict.to_state_dict(variables, adabin.name_map(model)).items()}
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  h = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), t["conv1.weight"], padding=1)
  h = F.batch_norm(h, t["bn1.running_mean"], t["bn1.running_var"], t["bn1.weight"],
                   t["bn1.bias"], eps=1e-5)
  p, n = t["nonlinear1.pos_scale"].view(1, -1, 1, 1), t["nonlinear1.neg_scale"].view(1, -1, 1, 1)
  expected = (p * F.relu(h) - n * F.relu(-h)).numpy().transpose(0, 2, 3, 1)
  _, inter = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
  np.testing.assert_allclose(inter["intermediates"]["Maxout_0"]["__call__"][0], expected,
                             rtol=1e-4, atol=1e-4)


def test_imagenet_resnet18_maps_the_avg_down_shortcut_and_fc():
  model = _model("bnn_resnet18", num_classes=7)
  tensors = state_dict.to_state_dict(_random(model, 64), adabin.name_map(model))
  assert tensors["layer2.0.downsample.1.weight"].shape == (128, 64, 1, 1)
  assert tensors["layer2.0.downsample.2.running_var"].shape == (128,)
  assert tensors["fc.weight"].shape == (7, 512) and tensors["conv1.weight"].shape == (64, 3, 7, 7)
  # stem 7 + 8 blocks × 18 + 3 shortcuts × 5 + bn2 4 + fc 2 (the official bn3 and
  # nonlinear2 are never called: no effcomp leaf reads them).
  assert "layer1.0.downsample.1.weight" not in tensors and len(tensors) == 172


def test_shape_mismatch_missing_tensors_and_incompatible_models_are_errors():
  model = _model()
  name_map = adabin.name_map(model)
  tensors = state_dict.to_state_dict(_random(model), name_map)
  template = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  bad = {**tensors, "layer1.0.conv1.weight": np.zeros((16, 16, 5, 5), np.float32)}
  with pytest.raises(ValueError, match=r"wrong shape layer1\.0\.conv1\.weight \(16, 16, 5, 5\)"):
    state_dict.from_state_dict(bad, template, name_map)
  missing = {k: v for k, v in tensors.items() if k != "bn2.running_var"}
  with pytest.raises(ValueError, match=r"no tensor for 1 leaves: batch_stats/head_bn/var"):
    state_dict.from_state_dict(missing, template, name_map)
  with pytest.raises(ValueError, match="pass initialized variables"):
    state_dict.from_state_dict(missing, template, name_map, fill_missing=True)
  initialized = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  _, report = state_dict.from_state_dict(missing, initialized, name_map, fill_missing=True)
  assert report.unfilled == ("batch_stats/head_bn/var (key bn2.running_var)",)
  with pytest.raises(ValueError, match="adabin_act_form='official'"):
    adabin.name_map(_model(adabin_act_form="paper"))
  with pytest.raises(ValueError, match="bnn_resnet20"):
    adabin.name_map(runs.build_model(ml_collections.ConfigDict({"name": "mlp"}), "float32"))


def test_read_takes_safetensors_npz_and_names_bad_files(tmp_path):
  arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.float32)}
  safetensors_np.save_file(arrays, str(tmp_path / "w.safetensors"))
  np.savez(tmp_path / "w.npz", **arrays)
  for name in ("w.safetensors", "w.npz"):
    read = state_dict.read(str(tmp_path / name))
    assert set(read) == set(arrays) and np.array_equal(read["a.weight"], arrays["a.weight"])
  with pytest.raises(FileNotFoundError, match="no such file"):
    state_dict.read(str(tmp_path / "none.pth"))
  torch.save([1, 2], tmp_path / "list.pth")
  with pytest.raises(ValueError, match="holds a list, expected a state dict"):
    state_dict.read(str(tmp_path / "list.pth"))
  torch.save({"epoch": 3}, tmp_path / "empty.pth")
  with pytest.raises(ValueError, match="no tensors"):
    state_dict.read(str(tmp_path / "empty.pth"))


def test_layouts_invert_each_other_and_fused_keys_need_a_merge():
  a = np.random.default_rng(0).normal(size=(5, 3, 2, 4)).astype(np.float32)
  np.testing.assert_array_equal(CONV.to_torch(CONV.to_effcomp(a)), a)
  np.testing.assert_array_equal(LINEAR.to_torch(LINEAR.to_effcomp(a[:, :, 0, 0])), a[:, :, 0, 0])
  fused = lambda path: ("qkv.weight", LINEAR)
  with pytest.raises(ValueError, match="read by 2 leaves"):
    state_dict.to_state_dict({"params": {"q": np.ones((2, 2)), "k": np.ones((2, 2))}}, fused)
  merged = state_dict.to_state_dict({"params": {"q": np.ones((2, 2)), "k": np.zeros((2, 2))}},
                                    fused, merge=lambda key, parts: np.concatenate(
                                        [p for _, p in parts]))
  assert merged["qkv.weight"].shape == (4, 2)
