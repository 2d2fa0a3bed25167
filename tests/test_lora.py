"""LoRA and mixture-of-ranks adapters: the adapted layers' outputs, per-image gates, MoR
routing (top-k, shared ranks always on, zero experts free) and the balance loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effcomp.metrics import flops
from effcomp.nn import lora


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(6, name="fc2")(nn.gelu(nn.Dense(5, name="fc1")(x)))


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="head")(Block(name="block_0")(x))


def _setup():
  net = Net()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 7, 4)), jnp.float32)
  return net, net.init(jax.random.key(0), x), x


def test_adapters_add_a_low_rank_update_to_the_named_layers():
  net, variables, x = _setup()
  assert lora.dense_paths(variables["params"], ("fc1", "fc2")) == {
      "block_0.fc1": (4, 5), "block_0.fc2": (5, 6)}
  adapters = lora.init_adapters(jax.random.key(1), variables["params"], ("fc1", "fc2"), rank=2)
  # B = 0: the adapted model is the model.
  np.testing.assert_allclose(_apply(net, variables, x, adapters), net.apply(variables, x),
                             atol=1e-6)
  rng = np.random.default_rng(2)
  adapters = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), adapters)
  with lora.adapted(adapters, scale=0.5):
    got = net.apply(variables, x)
  # By hand: W + 0.5·A·B in both layers.
  p = variables["params"]["block_0"]
  delta = lambda name: 0.5 * adapters[f"block_0.{name}"]["a"] @ adapters[f"block_0.{name}"]["b"]
  h = nn.gelu(x @ (p["fc1"]["kernel"] + delta("fc1")) + p["fc1"]["bias"])
  h = h @ (p["fc2"]["kernel"] + delta("fc2")) + p["fc2"]["bias"]
  want = h @ variables["params"]["head"]["kernel"] + variables["params"]["head"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Gradients reach the adapters.
  g = jax.grad(lambda a: jnp.sum(_apply(net, variables, x, a)))(adapters)
  assert float(jnp.abs(g["block_0.fc1"]["a"]).max()) > 0
  with pytest.raises(ValueError, match="no Dense layer"):
    lora.dense_paths(variables["params"], ("qkv",))


def _apply(net, variables, x, adapters, gates=None):
  with lora.adapted(adapters, gates=gates):
    return net.apply(variables, x)


def test_per_image_gates_switch_ranks_and_repeat_over_windows():
  net, variables, x = _setup()
  rng = np.random.default_rng(3)
  adapters = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32),
                          lora.init_adapters(jax.random.key(1), variables["params"], ("fc1",), 2))
  full = _apply(net, variables, x, adapters)
  none = net.apply(variables, x)
  # 2 images × 2 rows each (x has 4 rows: image-major windows): image 0 all ranks on,
  # image 1 all off.
  gated = _apply(net, variables, x, adapters, gates=jnp.array([[1.0, 1.0], [0.0, 0.0]]))
  np.testing.assert_allclose(gated[:2], full[:2], atol=1e-6)
  np.testing.assert_allclose(gated[2:], none[2:], atol=1e-6)
  with pytest.raises(ValueError, match="multiple"):
    _apply(net, variables, x, adapters, gates=jnp.ones((3, 2)))


def test_mor_gates_top_k_shared_and_zero_experts():
  # 3 routed ranks + 2 zero experts; 2 shared ranks; top-2.
  logits = jnp.log(jnp.array([[0.4, 0.3, 0.1, 0.1, 0.1],    # two routed ranks
                              [0.05, 0.05, 0.1, 0.4, 0.4]]))  # two zero experts
  gates, info = lora.mor_gates(logits, num_shared=2, num_routed=3, top_k=2)
  np.testing.assert_allclose(gates, [[1, 1, 0.4, 0.3, 0], [1, 1, 0, 0, 0]], atol=1e-6)
  np.testing.assert_array_equal(info["active"], [4, 2])  # shared always on
  np.testing.assert_array_equal(info["chosen"].sum(-1), [2, 2])


def test_zero_experts_cost_no_flops():
  net, variables, x = _setup()
  adapters = lora.init_adapters(jax.random.key(1), variables["params"], ("fc1", "fc2"), rank=6)

  def macs(zero_slots):
    def run(x):
      logits = jnp.zeros((2, 4 + zero_slots))
      gates, _ = lora.mor_gates(logits, num_shared=2, num_routed=4, top_k=3)
      return _apply(net, variables, x, adapters, gates)
    return flops.jaxpr_macs(run, x)

  assert macs(0) == macs(8) > flops.jaxpr_macs(lambda x: net.apply(variables, x), x)


def test_load_balance_loss_on_a_fixed_routing():
  probs = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
  chosen = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])  # top-1: a routed rank, the zero expert
  # f = [.5, 0, .5], p = [.3, .2, .5], α = [1, 1, 2·1]: 3·(.5·.3 + 2·.5·.5) = 1.95.
  np.testing.assert_allclose(lora.load_balance_loss(probs, chosen, 2, jnp.float32(2.0)), 1.95,
                             rtol=1e-6)
  # A more severe degradation makes idling on the zero expert dearer.
  assert float(lora.load_balance_loss(probs, chosen, 2, jnp.float32(3.0))) > 1.95


def test_load_balance_loss_weighs_each_image_by_its_severity():
  probs = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
  chosen = jnp.array([[1.0, 0, 0], [0, 0, 1.0]])
  # Zero expert: mean_b s_b·p_b = (1·.2 + 3·.8)/2 = 1.3; 3·(.5·.3 + .5·1.3) = 2.4.
  np.testing.assert_allclose(lora.load_balance_loss(probs, chosen, 2, jnp.array([1.0, 3.0])),
                             2.4, rtol=1e-6)
  # The same severity for both images is the scalar form.
  np.testing.assert_allclose(lora.load_balance_loss(probs, chosen, 2, jnp.array([2.0, 2.0])),
                             1.95, rtol=1e-6)


def test_per_layer_gates():
  net, variables, x = _setup()
  adapters = lora.init_adapters(jax.random.key(1), variables["params"], ("fc1", "fc2"), 2)
  adapters = jax.tree.map(lambda a: a + 0.5, adapters)
  off = {path: jnp.zeros((2, 2)) for path in adapters}
  np.testing.assert_allclose(_apply(net, variables, x, adapters, off), net.apply(variables, x),
                             atol=1e-6)
  only_fc1 = {path: jnp.ones((2, 2)) if path.endswith("fc1") else jnp.zeros((2, 2))
              for path in adapters}
  fc1 = {p: a for p, a in adapters.items() if p.endswith("fc1")}
  np.testing.assert_allclose(_apply(net, variables, x, adapters, only_fc1),
                             _apply(net, variables, x, fc1), atol=1e-5)
