"""Hugging Face LLaMA/Mistral/Qwen2 checkpoints ↔ effcomp Llama (effcomp.models.lm.hf)."""

import json
import os
import warnings

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest

from effcomp.models.lm import hf, hf_checkpoint
from effcomp.models.lm.llama import Llama

VOCAB, TOKENS = 128, (2, 11)
TINY = dict(vocab_size=VOCAB, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
            mlp_dim=96)
# (model_type, tied embeddings): Qwen2 carries q/k/v biases.
KINDS = [("llama", False), ("qwen2", True), ("mistral", True)]


def _tokens(seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, TOKENS)


def _random_model(model_type="llama", tie=False, seed=0):
  """A tiny Llama with every param random (biases nonzero, norm scales away from 1)."""
  model = Llama(**TINY, tie_embeddings=tie, qkv_bias=model_type == "qwen2", rope_theta=5e4)
  params = nn.unbox(model.init(jax.random.key(seed), _tokens())["params"])
  rng = np.random.default_rng(seed)
  return model, jax.tree.map(lambda x: (0.2 * rng.normal(size=x.shape)).astype(np.float32), params)


def _logits(model, params, tokens):
  return np.asarray(model.apply({"params": params}, tokens))


def _tiny_config(**overrides):
  config = hf.hf_config_from_model(Llama(**TINY))
  config.update(overrides)
  return config


@pytest.mark.parametrize("model_type,tie", KINDS)
@pytest.mark.parametrize("sharded", [False, True])
def test_save_then_load_gives_identical_params_and_logits(tmp_path, model_type, tie, sharded):
  model, params = _random_model(model_type, tie)
  hf.save(str(tmp_path), model, params, model_type, max_shard_bytes=4096 if sharded else 5 << 30)
  assert os.path.exists(tmp_path / hf_checkpoint.INDEX_FILE) == sharded
  loaded_model, loaded = hf.load(str(tmp_path))
  assert loaded_model.tie_embeddings == tie and loaded_model.qkv_bias == (model_type == "qwen2")
  flat, flat_loaded = (flax.traverse_util.flatten_dict(p) for p in (params, loaded))
  assert flat.keys() == flat_loaded.keys()
  for path in flat:
    np.testing.assert_array_equal(flat_loaded[path], flat[path], err_msg="/".join(path))
  np.testing.assert_array_equal(_logits(loaded_model, loaded, _tokens()),
                                _logits(model, params, _tokens()))


def test_bfloat16_save_loads_back_within_bfloat16_precision(tmp_path):
  model, params = _random_model("llama")
  hf.save(str(tmp_path), model, params, dtype="bfloat16")
  _, tensors = hf_checkpoint.read_folder(str(tmp_path))
  assert {str(t.dtype) for t in tensors.values()} == {"bfloat16"}
  assert hf_checkpoint.read_config(str(tmp_path))["dtype"] == "bfloat16"
  _, loaded = hf.load(str(tmp_path))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=2 ** -8, atol=0)


def test_hf_names_transpose_kernels_and_omit_tied_lm_head():
  model, params = _random_model("qwen2", tie=True)
  tensors = hf.params_to_hf(params, model)
  layer = "model.layers.1."
  assert {n for n in tensors if n.startswith(layer)} == {layer + n for n in [
      "input_layernorm.weight", "post_attention_layernorm.weight",
      "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
      "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
      "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
      "mlp.down_proj.weight"]}
  assert "lm_head.weight" not in tensors
  np.testing.assert_array_equal(tensors[layer + "self_attn.k_proj.weight"],
                                params["layers_1"]["attn"]["k"]["kernel"].T)  # [kv·D, embed]
  np.testing.assert_array_equal(tensors["model.embed_tokens.weight"],
                                params["embed"]["embedding"])


def test_params_to_hf_accepts_boxed_params():
  model = Llama(**TINY)
  boxed = model.init(jax.random.key(0), _tokens())["params"]
  assert isinstance(boxed["final_norm"]["scale"], nn.LogicallyPartitioned)
  assert hf.params_to_hf(boxed, model).keys() == hf.params_to_hf(nn.unbox(boxed), model).keys()


def test_loading_ignores_rotary_buffers_and_accepts_duplicated_tied_lm_head():
  model, params = _random_model("llama", tie=True)
  tensors = hf.params_to_hf(params, model)
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, np.float32)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  hf.params_from_hf(tensors, model)
  tensors["lm_head.weight"] += 1
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    hf.params_from_hf(tensors, model)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
     r"missing \['model.layers.1.mlp.up_proj.weight'\]"),
    (lambda t: t.update({"model.norm.weight": np.ones(63, np.float32)}),
     r"wrong shape \['model.norm.weight \(63,\) ≠ \(64,\)'\]"),
    (lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": np.ones(64, np.float32)}),
     r"unexpected \['model.layers.0.self_attn.o_proj.bias'\]"),
])
def test_params_from_hf_names_each_bad_tensor(edit, message):
  model, params = _random_model("llama")
  tensors = hf.params_to_hf(params, model)
  edit(tensors)
  with pytest.raises(ValueError, match=message):
    hf.params_from_hf(tensors, model)


@pytest.mark.parametrize("overrides,message", [
    ({"model_type": "gpt2"}, "model_type='gpt2'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
     "rope_type='llama3'"),
    ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}},
     "rope_type='linear'"),
    ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
     "partial_rotary_factor=0.5"),
    ({"mlp_bias": True}, "mlp_bias=True"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"hidden_size": None}, "'hidden_size'"),
])
def test_unsupported_configs_raise_naming_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    hf.model_from_hf_config(_tiny_config(**overrides))


def test_legacy_config_keys_and_class_defaults():
  config = {"model_type": "mistral", "vocab_size": VOCAB, "hidden_size": 64,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 16,
            "rope_theta": 1e6, "sliding_window": None}  # transformers 4.x layout
  model = hf.model_from_hf_config(config)
  assert (model.rope_theta, model.kv_heads, model.norm_eps) == (1e6, 8, 1e-6)
  llama = hf.model_from_hf_config(dict(config, model_type="llama", rope_scaling=None))
  assert llama.kv_heads == 16 and not llama.tie_embeddings


@pytest.mark.parametrize("overrides,window", [
    ({"model_type": "mistral", "sliding_window": 4096}, 4096),
    ({"model_type": "mistral"}, 4096),  # MistralConfig's default
    ({"model_type": "mistral", "sliding_window": None}, None),
    ({"model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 1}, 4096),
    ({"model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 2}, None),
    ({"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 64}, None),
])
def test_sliding_window_loads_with_a_warning_only_when_enabled(overrides, window):
  config = _tiny_config(**overrides)
  assert hf.sliding_window(config) == window
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    hf.model_from_hf_config(config)
  assert [str(w.message).split(":")[0] for w in caught] == (
      [f"sliding_window={window}"] if window else [])


def test_exported_config_rejects_biases_the_model_type_lacks():
  with pytest.raises(ValueError, match="model_type='qwen2' with qkv_bias=False"):
    hf.hf_config_from_model(Llama(**TINY), "qwen2")
  with pytest.raises(ValueError, match="model_type='llama' with qkv_bias=True"):
    hf.hf_config_from_model(Llama(**TINY, qkv_bias=True), "llama")
  for extra in ({"attention": "retention"}, {"layer_mlp": (16,) * TINY["num_layers"]}):
    with pytest.raises(ValueError, match="per-layer widths .* or retention"):
      hf.hf_config_from_model(Llama(**TINY, **extra))


# --- Against transformers (PyTorch) -------------------------------------------------


@pytest.fixture
def transformers(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
  pytest.importorskip("torch", reason="torch is needed for the transformers reference")
  return pytest.importorskip("transformers", reason="transformers reference not installed")


def _torch_logits(torch_model, tokens):
  import torch
  with torch.no_grad():
    return torch_model(torch.tensor(tokens)).logits.numpy()


def _random_torch_model(transformers, model_type, tie):
  """A tiny transformers model, every weight random (norms around 1), eval mode."""
  import torch
  cls = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[model_type]
  config = getattr(transformers, cls + "Config")(
      vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=tie,
      rope_parameters={"rope_type": "default", "rope_theta": 5e4}, attn_implementation="eager")
  torch.manual_seed(0)
  torch_model = getattr(transformers, cls + "ForCausalLM")(config).eval()
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      p.copy_((1 if "norm" in name else 0) + 0.2 * torch.randn_like(p))
  return torch_model


@pytest.mark.parametrize("model_type,tie,shard_size", [
    ("llama", False, None), ("qwen2", True, "20KB"), ("mistral", False, None)])
def test_transformers_checkpoint_loads_with_matching_logits(tmp_path, transformers, model_type,
                                                            tie, shard_size):
  torch_model = _random_torch_model(transformers, model_type, tie)
  kwargs = {"max_shard_size": shard_size} if shard_size else {}
  torch_model.save_pretrained(str(tmp_path), safe_serialization=True, **kwargs)
  assert os.path.exists(tmp_path / hf_checkpoint.INDEX_FILE) == bool(shard_size)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "sliding_window=4096")  # Mistral's default; 11 tokens.
    model, params = hf.load(str(tmp_path))
  assert (model.kv_heads, model.tie_embeddings) == (2, tie)
  diff = np.abs(_logits(model, params, _tokens()) - _torch_logits(torch_model, _tokens())).max()
  assert diff <= 1e-4, f"{model_type}: max |Δlogit| = {diff}"


@pytest.mark.parametrize("model_type,tie", KINDS)
def test_saved_checkpoint_loads_in_transformers_with_matching_logits(tmp_path, transformers,
                                                                     model_type, tie):
  model, params = _random_model(model_type, tie)
  hf.save(str(tmp_path), model, params, model_type)
  with open(tmp_path / hf_checkpoint.CONFIG_FILE) as f:
    assert json.load(f)["architectures"] == [hf.ARCHITECTURES[model_type]]
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), attn_implementation="eager").eval()
  assert type(torch_model).__name__ == hf.ARCHITECTURES[model_type]
  diff = np.abs(_logits(model, params, _tokens()) - _torch_logits(torch_model, _tokens())).max()
  assert diff <= 1e-4, f"{model_type}: max |Δlogit| = {diff}"
