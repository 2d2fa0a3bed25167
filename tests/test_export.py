"""Bit-packed export of binary networks (effcomp.quant.export) against their float graphs."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, train_args
from effcomp import models
from effcomp.quant import binary, export, pack

METHODS = [("bnn", "paper"), ("xnor", "paper"), ("bireal", "paper"), ("reactnet", "paper"),
           ("adabin", "paper"), ("adabin", "official")]
MODELS = [("bnn_vgg_small", {"width": 0.125}), ("bnn_resnet20", {})]
BATCH = 64


def _randomize(path, leaf, rng):
  """Non-trivial BatchNorm affine, RPReLU and activation-binarizer params; AdaBin's α_a
  of either sign (the 'official' form then packs |α_a|)."""
  names = [getattr(p, "key", "") for p in path]
  shape = np.shape(leaf)
  if "act" in names and names[-1] == "alpha":
    return rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if names[-1] in ("beta", "threshold", "bias", "gamma", "zeta"):
    return (0.2 * rng.normal(size=shape)).astype(np.float32)
  if names[-1] == "scale":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  return leaf


def _random_model(name, kwargs, method, form, seed=0):
  """A model with random params and BatchNorm statistics near those of its inputs, so the
  eval graph neither saturates nor sits on exact ties (mean 0, var 1 would do both)."""
  model = models.build(name, method=method, adabin_act_form=form, **kwargs)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(BATCH, 16, 16, 3)), jnp.float32)
  variables = nn.unbox(model.init(jax.random.PRNGKey(seed), x, train=False))
  params = jax.tree_util.tree_map_with_path(lambda p, l: _randomize(p, l, rng), variables["params"])
  old = variables["batch_stats"]
  _, new = model.apply({"params": params, "batch_stats": old}, x, train=True, mutable=["batch_stats"])
  batch_stats = jax.tree.map(lambda n, o: (n - 0.9 * o) / 0.1, new["batch_stats"], old)  # momentum 0.9

  def perturb(path, stat):
    if path[-1].key == "mean":
      return stat + 0.3 * rng.normal(size=stat.shape).astype(np.float32)
    return jnp.maximum(stat, 1e-3) * rng.uniform(0.5, 2.0, stat.shape).astype(np.float32)

  stats = jax.tree_util.tree_map_with_path(perturb, batch_stats)
  return model, {"params": params, "batch_stats": stats}, x


def _float_with_layer_io(model, variables, x):
  """Logits of model.apply(train=False) and each binary layer's (input, output)."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(context.module, export.BINARY_LAYERS):
      seen["/".join(context.module.path)] = (args[0], out)
    return out

  with nn.intercept_methods(record):
    logits = model.apply(variables, x, train=False)
  return logits, seen


@pytest.mark.parametrize("name,kwargs", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("method,form", METHODS, ids=[f"{m}-{f}" for m, f in METHODS])
def test_packed_layers_and_logits_match_the_float_graph(name, kwargs, method, form):
  model, variables, x = _random_model(name, kwargs, method, form)
  packed = export.pack_model(model, variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
  assert len(packed.specs) == (5 if name == "bnn_vgg_small" else 18)
  for spec in packed.specs:  # the float kernels and activation params are gone
    node = packed.float_variables["params"]
    for p in spec.path:
      node = node.get(p, {})
    assert "kernel" not in node and "act" not in node, spec.path

  # Eager: the op cache is shared by all cases (jit compiles each graph anew: 2x slower);
  # packed_apply under jit is covered by the dense test and the CLI.
  float_logits, io = _float_with_layer_io(model, variables, x)
  float_out = {k: y for k, (_, y) in io.items()}
  packed_out = {k: pack.apply_packed_conv2d(packed.layers[k], io[k][0], s.strides, s.padding)
                for k, s in ((export._key(s.path), s) for s in packed.specs)}
  float_logits, packed_logits = np.asarray(float_logits), np.asarray(export.packed_apply(model, packed, x))
  assert set(packed_out) == set(float_out)
  for key, y in float_out.items():
    err = np.abs(packed_out[key] - y).max()
    assert err <= 1e-5 * np.abs(y).max(), (key, err, np.abs(y).max())
  diff = np.abs(packed_logits - float_logits).max()
  if method == "bnn":  # integer-exact layers
    np.testing.assert_allclose(packed_logits, float_logits, rtol=1e-4, atol=1e-4)
  agreement = np.mean(packed_logits.argmax(-1) == float_logits.argmax(-1))
  assert agreement >= 0.95, f"argmax agreement {agreement:.3f}, max |logit diff| {diff:.3g}"
  assert float_logits.std() > 0.1 and len(set(float_logits.argmax(-1))) > 1  # not degenerate


class _BinaryMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = binary.BinaryDense(48, use_bias=True, name="fc1")(x.reshape(x.shape[0], -1))
    return binary.BinaryDense(10, weight_method="xnor", act_method="reactnet", name="fc2")(x)


def test_dense_layers_with_bias_pack_and_save_load_round_trip_is_identical(tmp_path):
  model = _BinaryMLP()
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(16, 70)), jnp.float32)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, l: _randomize(p, l, rng), nn.unbox(model.init(jax.random.PRNGKey(1), x)))
  packed = export.pack_model(model, variables, x)
  assert [(s.path, s.kind, s.in_size) for s in packed.specs] == [(("fc1",), "dense", 70),
                                                                 (("fc2",), "dense", 48)]
  assert set(packed.float_variables["params"]) == {"fc1"}  # only fc1's bias stays float
  y = jax.jit(lambda p, x: export.packed_apply(model, p, x))(packed, x)
  np.testing.assert_allclose(y, model.apply(variables, x), rtol=1e-5, atol=1e-5)

  export.save(packed, str(tmp_path / "packed"))
  export.save(packed, str(tmp_path / "packed"))  # overwriting an export is fine
  loaded = export.load(str(tmp_path / "packed"))
  assert loaded.specs == packed.specs
  jax.tree.map(np.testing.assert_array_equal, loaded, packed)
  np.testing.assert_array_equal(export.packed_apply(model, loaded, x), y)


@pytest.mark.parametrize("name,kwargs,shape", [("bnn_vgg_small", {"width": 0.25}, (1, 16, 16, 1)),
                                                ("bnn_resnet18", {}, (1, 224, 224, 3))])
def test_binary_layers_are_32x_smaller_packed(name, kwargs, shape):
  # Channels are multiples of 32, so the sign words are exactly 1/32 of the float kernels.
  model, x = models.build(name, method="adabin", **kwargs), jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros(shape))))
  packed = jax.eval_shape(lambda v: export.pack_model(model, v, x), variables)  # shapes suffice
  report = export.size_report(packed, variables)
  kernels = sum(4 * np.prod(s.kernel_size) * s.in_size * s.features for s in packed.specs)
  assert report["binary_words_bytes"] * 32 == kernels
  assert report["binary_ratio"] > 25, report  # with α_w, β_w per channel
  assert report["packed_bytes"] < report["float_bytes"] / 10, report


def _number(label, text):
  return float(re.search(rf"{label}\s+([0-9.]+)", text).group(1))


@pytest.mark.slow  # end to end, ≈ 40 s: make test-slow
def test_export_cli_packs_a_trained_run_and_keeps_its_accuracy(tmp_path, data_dir):
  config = "configs/bnn_digits.py:model=vgg_small,method=adabin,steps=20"
  run_python(train_args(str(tmp_path), config))
  out = run_python(["experiments/export.py", f"--config={config}", f"--workdir={tmp_path}"]).stdout
  assert "effcomp export summary" in out, out
  float_acc, packed_acc = _number("float accuracy", out), _number("packed accuracy", out)
  assert float_acc > 0.3 and abs(packed_acc - float_acc) <= 0.02, out
  assert _number("argmax agreement", out) >= 0.95, out
  assert re.search(r"binary layers\s+5: .*\((2[5-9]|3[0-2])\.\dx\)", out), out
  assert (tmp_path / "packed" / "packed_model.json").exists()
  assert export.load(str(tmp_path / "packed")).specs[0].path == ("conv1",)

  bad = run_python(["experiments/export.py", f"--config={config}", f"--workdir={tmp_path / 'none'}"],
                   check=False)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("effcomp: error: ")
