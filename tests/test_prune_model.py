"""Pruning a whole model block by block: the requested sparsity in every block kernel, the
rest untouched, Wanda's masks from the pruned previous block, masks and save/load."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_llama
from effcomp.models.lm import bert
from effcomp.prune import masks, prune_model, storage, wanda
from effcomp.quant.ptq import blocks


@pytest.fixture(scope="module")
def small():
  model, params, _, calib = small_llama(16, 8)
  return model, params, calib


def _leaves(params):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.mark.parametrize("method,nm", [("magnitude", None), ("wanda", None), ("sparsegpt", None),
                                       ("wanda", "2:4"), ("sparsegpt", "4:8")])
def test_prune_model_gives_the_sparsity_in_every_block_kernel_and_nothing_else(small, method, nm):
  model, params, calib = small
  bm = blocks.for_llama(model)
  pruned, packed, report = prune_model.prune_model(bm, params, calib, method, 0.5, nm)
  kernels = {k for i in range(bm.num_blocks) for k in bm.kernels(i)}
  assert set(packed) == kernels and set(report["kernel_sparsity"]) == kernels
  assert report["setting"] == (nm or "unstructured50") and report["method"] == method
  assert report["sparsity"] == 0.5 and report["seconds"] > 0
  for path in kernels:
    keep = masks.unpack(packed[path])
    w = np.asarray(blocks.get_path(pruned, path))
    assert np.count_nonzero(~keep) == keep.size // 2, path
    assert (w[~keep] == 0).all(), path
    if nm:
      n, m = masks.parse_nm(nm)
      assert (keep.reshape(-1, m, keep.shape[1]).sum(axis=1) == n).all(), path
  before, after = _leaves(params), _leaves(pruned)
  for key, value in before.items():
    if "kernel" not in key or "lm_head" in key:  # embeddings, norms, LM head
      np.testing.assert_array_equal(after[key], value, err_msg=key)
  if method != "sparsegpt":  # no weight updates: the pruned kernels are the masked ones
    masked = _leaves(prune_model.apply_masks(params, packed))
    for key, value in after.items():
      np.testing.assert_array_equal(masked[key], value, err_msg=key)


def test_wanda_scores_each_block_on_the_pruned_previous_blocks_output(small):
  model, params, calib = small
  bm = blocks.for_llama(model)
  pruned, packed, _ = prune_model.prune_model(bm, params, calib, "wanda", 0.5)
  hs = [bm.embed(params, b) for b in calib]
  for i in range(bm.num_blocks):
    captured = [bm.block(i, params, h, b, capture=True)[1] for h, b in zip(hs, calib)]
    for path in bm.kernels(i):
      state = wanda.init(blocks.get_path(params, path).shape[0])
      for c in captured:
        state = wanda.update(state, c[path])
      expected = masks.per_output(wanda.wanda_score(blocks.get_path(params, path), state.sq_norm),
                                  0.5)
      np.testing.assert_array_equal(masks.unpack(packed[path]), expected, err_msg=path)
    hs = [bm.block(i, pruned, h, b) for h, b in zip(hs, calib)]


def test_true_sequential_scores_later_groups_on_inputs_from_pruned_earlier_groups(small):
  model, params, calib = small
  bm = blocks.for_llama(model)
  _, default, _ = prune_model.prune_model(bm, params, calib, "wanda", 0.5)
  _, sequential, _ = prune_model.prune_model(bm, params, calib, "wanda", 0.5,
                                             options={"true_sequential": True})
  first, later = "layers_0/attn/q/kernel", "layers_0/attn/o/kernel"
  np.testing.assert_array_equal(masks.unpack(sequential[first]), masks.unpack(default[first]))
  assert (masks.unpack(sequential[later]) != masks.unpack(default[later])).any()


def test_sparsegpt_prunes_with_less_output_change_than_magnitude(small):
  model, params, calib = small
  bm = blocks.for_llama(model)
  tokens = np.concatenate(calib)
  ref = model.apply({"params": params}, tokens)
  errors = {}
  for method in ("magnitude", "sparsegpt"):
    pruned, _, _ = prune_model.prune_model(bm, params, calib, method, 0.5)
    errors[method] = float(jnp.mean((model.apply({"params": pruned}, tokens) - ref)**2))
  assert errors["sparsegpt"] < errors["magnitude"], errors


def test_prune_model_runs_on_the_bert_block_view():
  encoder = bert.BertEncoder(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=16)
  ids = jax.random.randint(jax.random.key(0), (4, 9), 0, 50)
  mask = jnp.ones((4, 9), jnp.int32)
  params = nn.unbox(encoder.init(jax.random.key(1), ids, mask)["params"])
  bm = blocks.for_bert(encoder)
  pruned, packed, report = prune_model.prune_model(bm, params, [(ids, mask)], "sparsegpt",
                                                   nm="2:4")
  assert len(packed) == 12 and report["sparsity"] == 0.5 and report["setting"] == "2:4"
  np.testing.assert_array_equal(pruned["embeddings_norm"]["scale"],
                                params["embeddings_norm"]["scale"])


def test_save_load_round_trip(small, tmp_path):
  model, params, calib = small
  pruned, packed, _ = prune_model.prune_model(blocks.for_llama(model), params, calib,
                                              "magnitude", 0.5)
  path = str(tmp_path / "pruned.npz")
  storage.save(path, pruned, packed)
  loaded, loaded_masks = storage.load(path)
  assert set(loaded_masks) == set(packed)
  for key in packed:
    np.testing.assert_array_equal(loaded_masks[key].bits, packed[key].bits)
    assert loaded_masks[key].shape == packed[key].shape
  before, after = _leaves(pruned), _leaves(loaded)
  assert set(before) == set(after)
  for key, value in before.items():
    np.testing.assert_array_equal(after[key], value, err_msg=key)
  stored, dense = storage.nbytes(pruned, packed)
  assert stored == dense // 2 + dense // 32  # half the float32 values, plus one bit each


@pytest.mark.parametrize("kwargs,name", [
    (dict(method="obs"), "method="),
    (dict(method="wanda", sparsity=1.0), "sparsity="),
    (dict(method="wanda", nm="4:2"), "nm="),
    (dict(method="wanda", options={"damp": 0.1}), "options="),
    (dict(method="sparsegpt", calib=[]), "calib is empty"),
])
def test_prune_model_bad_arguments_raise_value_error_naming_the_argument(small, kwargs, name):
  model, params, calib = small
  kwargs = {"calib": calib, **kwargs}
  with pytest.raises(ValueError, match=name):
    prune_model.prune_model(blocks.for_llama(model), params, **kwargs)
