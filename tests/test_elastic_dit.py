"""ElasticDiT (`effcomp.models.dit.elastic`): one parameter tree at every depth and patch
size; the largest configuration is a plain DiT."""

import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, train_args
from effcomp import config as config_lib
from effcomp import runs
from effcomp.diffusion import objectives
from effcomp.models.dit.dit import DiT, patchify, sincos_pos_embed_2d, unpatchify
from effcomp.models.dit.elastic import ElasticDiT, avg_pool, block_indices
from effcomp.tasks import diffusion
from effcomp.train import checkpoint, metrics_writer, trainer

SIZE = dict(input_size=8, in_channels=2, hidden_size=32, depth=4, num_heads=2, num_classes=3,
            learn_sigma=False)


def _inputs(b=2):
  x = jax.random.normal(jax.random.key(0), (b, 8, 8, 2))
  return x, jnp.asarray([3.0, 700.0])[:b], jnp.asarray([0, 2])[:b]


def _randomized(params, seed=1):
  """Every parameter random (the zero-initialized layers too), so outputs differ."""
  leaves, tree = jax.tree.flatten(flax.linen.unbox(params))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, v.shape) for k, v in
                                   zip(keys, leaves)])


def _model(**kw):
  return ElasticDiT(patch_size=2, depths=(4, 2, 1), patch_sizes=(2, 4), **{**SIZE, **kw})


def test_block_indices_keep_the_ends_and_spread_the_rest():
  assert block_indices(4, 4) == (0, 1, 2, 3)
  assert block_indices(2, 4) == (0, 3)
  assert block_indices(3, 7) == (0, 3, 6)
  assert block_indices(1, 4) == (0,)
  with pytest.raises(ValueError, match="depth=5"):
    block_indices(5, 4)


def test_every_configuration_shares_one_tree_and_the_largest_is_a_plain_dit():
  model = _model()
  x, t, y = _inputs()
  trees = [jax.tree.structure(model.init(jax.random.key(0), x, t, y, depth=d, patch_size=p))
           for d, p in model.configurations()]
  assert all(tree == trees[0] for tree in trees)
  params = _randomized(model.init(jax.random.key(0), x, t, y)["params"])
  plain = DiT(patch_size=2, **SIZE)
  plain_params = {k: v for k, v in params.items() if not k.endswith("_p4")}
  assert jax.tree.structure(plain_params) == jax.tree.structure(
      flax.linen.unbox(plain.init(jax.random.key(0), x, t, y)["params"]))
  np.testing.assert_allclose(model.apply({"params": params}, x, t, y),
                             plain.apply({"params": plain_params}, x, t, y), atol=1e-6)
  outputs = {(d, p): model.apply({"params": params}, x, t, y, depth=d, patch_size=p)
             for d, p in model.configurations()}
  assert all(o.shape == x.shape for o in outputs.values())
  assert float(jnp.abs(outputs[(4, 2)] - outputs[(2, 2)]).max()) > 1e-3
  assert float(jnp.abs(outputs[(4, 2)] - outputs[(4, 4)]).max()) > 1e-3


def test_a_shallow_configuration_runs_its_blocks_and_skips_the_others():
  model = _model()
  x, t, y = _inputs()
  params = _randomized(model.init(jax.random.key(0), x, t, y)["params"])
  skipped = dict(params, blocks_1=jax.tree.map(lambda v: v + 1.0, params["blocks_1"]))
  run = lambda p, **kw: model.apply({"params": p}, x, t, y, depth=2, **kw)
  np.testing.assert_allclose(run(params), run(skipped), atol=0)  # blocks 0 and 3 only
  used = dict(params, blocks_3=jax.tree.map(lambda v: v + 1.0, params["blocks_3"]))
  assert float(jnp.abs(run(params) - run(used)).max()) > 1e-3


def _zero_coarse_layers(params):
  return {k: (jax.tree.map(jnp.zeros_like, v) if k.endswith("_p4") else v)
          for k, v in params.items()}


def test_coarse_patch_at_init_is_the_pi_resized_base_patch_at_merged_positions():
  """With the coarse residual layers zero (their initialization), a 4-pixel patch embeds as
  its 2×2-average-pooled 2-pixel patch at the mean position of the 2×2 fine tokens it
  covers, and the output is the base prediction upsampled."""
  model = _model()
  x, t, y = _inputs()
  params = _zero_coarse_layers(_randomized(model.init(jax.random.key(0), x, t, y)["params"]))
  coarse = model.apply({"params": params}, x, t, y, patch_size=4)
  fine = sincos_pos_embed_2d(32, 4)  # row-major 4×4 fine grid
  merged_positions = np.stack([fine[[8 * i + 2 * j, 8 * i + 2 * j + 1, 8 * i + 2 * j + 4,
                                     8 * i + 2 * j + 5]].mean(0)
                               for i in range(2) for j in range(2)])

  class Merged(ElasticDiT):  # by hand: pooled patches, merged positions, blocks, upsampling
    @nn.compact
    def __call__(self, x, t, y):
      tokens = self.embed_patches(patchify(avg_pool(x, 2), 2), 2, merged_positions)
      c = self.condition(t, y, False, None)
      for block in self.blocks():
        tokens = block(tokens, c)
      return jax.image.resize(unpatchify(self.final_layer(tokens, c), 2, 2, 2), x.shape,
                              "bilinear")

  merged = Merged(patch_size=2, depths=(4,), patch_sizes=(2, 4), **SIZE)
  np.testing.assert_allclose(coarse, merged.apply({"params": params}, x, t, y), atol=1e-5)
  # merge_positions=False: the coarse grid's own positions, i.e. the same network on the
  # 2×2-average-pooled image at patch 2.
  own = _model(merge_positions=False).apply({"params": params}, x, t, y, patch_size=4)
  small = ElasticDiT(patch_size=2, depths=(4,), patch_sizes=(2,), **{**SIZE, "input_size": 4})
  base = small.apply({"params": {k: v for k, v in params.items() if not k.endswith("_p4")}},
                     avg_pool(x, 2), t, y)
  np.testing.assert_allclose(own, jax.image.resize(base, x.shape, "bilinear"), atol=1e-5)
  assert float(jnp.abs(own - coarse).max()) > 1e-3


def test_gradients_reach_the_coarse_layers_only_when_they_run():
  model = _model()
  x, t, y = _inputs()
  params = _randomized(model.init(jax.random.key(0), x, t, y)["params"])
  grad = lambda **kw: jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, t, y, **kw)
                                                 ** 2))(params)
  fine, coarse = grad(), grad(patch_size=4)
  assert float(jnp.abs(fine["final_linear_p4"]["kernel"]).max()) == 0
  assert float(jnp.abs(coarse["final_linear_p4"]["kernel"]).max()) > 0
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(coarse))


def test_ssba_and_bad_configurations():
  x, t, y = _inputs()
  model = _model(attention="ssba:2", input_size=8)
  variables = model.init(jax.random.key(0), x, t, y)
  assert model.apply(variables, x, t, y, depth=2, patch_size=4).shape == x.shape
  with pytest.raises(ValueError, match="patch_size=8"):
    _model().init(jax.random.key(0), x, t, y, patch_size=8)
  with pytest.raises(ValueError, match="depths="):
    ElasticDiT(patch_size=2, depths=(2,), patch_sizes=(2,), **SIZE).init(
        jax.random.key(0), x, t, y)
  with pytest.raises(ValueError, match="patch_sizes="):
    ElasticDiT(patch_size=2, depths=(4,), patch_sizes=(2, 3), **SIZE).init(
        jax.random.key(0), x, t, y)
  with pytest.raises(ValueError, match="block=4 must divide"):
    _model(attention="ssba:4").init(jax.random.key(0), x, t, y)


ELASTIC_RUN = {"model.hidden_size": 32, "model.num_heads": 2, "train.batch_size": 8,
               "eval.batch_size": 8, "train.progress_bar": False, "train.log_every": 1,
               "train.eval_every": 0, "checkpoint.async_save": False}


def _elastic_config(steps=2, **overrides):
  return config_lib.load(f"configs/diffusion_digits.py:model=ElasticDiT-T,objective=flow,"
                         f"steps={steps}", **{**ELASTIC_RUN, **overrides})


def test_sandwich_loss_is_the_largest_plus_the_smallest_with_distillation():
  config = _elastic_config(**{"task.elastic_random": 0, "task.elastic_distill": 0.5})
  task = runs.build_task(config)
  model = task.model
  batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1)),
                                jnp.uint8), "label": jnp.asarray([0, 1, 2, 3])}
  params = _randomized(task.init_fn(jax.random.key(0), batch)["params"])
  rng = jax.random.key(3)
  loss, _ = task.loss_fn(params, {}, batch, rng, None, jnp.int32(0))
  # By hand: the flow loss draws t and ε from the same key for each configuration.
  x0 = diffusion.to_model_space(batch["image"], 16)
  rng_loss, rng_drop = jax.random.split(jax.random.split(rng)[0])

  def run(depth, patch):
    out = {}

    def fn(x_t, t):
      out["v"] = model.apply({"params": params}, x_t, t * 1000.0, batch["label"], train=True,
                             rngs={"dropout": rng_drop}, depth=depth, patch_size=patch)
      return out["v"]
    loss, _ = objectives.training_loss(rng_loss, fn, x0, None, "flow", False,
                                       t_distribution="logit_normal", logit_mean=0.0,
                                       logit_std=1.0, shift=1.0)
    return loss, out["v"]

  big, v_big = run(6, 2)
  small, v_small = run(2, 4)
  want = big + small + 0.5 * jnp.mean(jnp.square(v_small - v_big), axis=(1, 2, 3))
  np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-5)


def test_init_partial_starts_an_elastic_model_from_a_plain_dit(tmp_path):
  exp = runs.setup(_elastic_config(**{"init.workdir": str(tmp_path / "plain"), "init.ema": True,
                                      "init.partial": True}))
  # A plain DiT-T/2 of depth 6 has the elastic tree without the coarse patch layers.
  source = {k: v for k, v in _randomized(exp.state.params).items() if not k.endswith("_p4")}
  checkpoint.save_variables(str(tmp_path / "plain"), {"params": source}, ema=True)
  state = trainer._init_from(exp.state, exp, exp.config.init)
  params = flax.linen.unbox(state.params)
  for name, value in params.items():  # the shared leaves are the plain DiT's, the rest fresh
    want = source[name] if name in source else flax.linen.unbox(exp.state.params)[name]
    jax.tree.map(np.testing.assert_array_equal, value, want)
  assert set(params) - set(source) == {"x_embedder_p4", "final_linear_p4"}
  jax.tree.map(np.testing.assert_array_equal, flax.linen.unbox(state.ema_params), params)


@pytest.mark.slow  # ~40 s (the sandwich's six branches and two samplers compile): make test-slow
def test_elastic_run_trains_and_samples_a_chosen_configuration(tmp_path):
  workdir = str(tmp_path / "elastic")
  runs.train(_elastic_config(), workdir)
  run = runs.open(workdir)
  labels = jnp.arange(4)
  config = dict(config=run.config, steps=2, sampler="euler")
  full = diffusion.sample_images(run.model, run.params, labels, jax.random.key(0), **config)
  run.config.unlock()
  run.config.task.elastic_depth, run.config.task.elastic_patch = 2, 4
  lite = diffusion.sample_images(run.model, run.params, labels, jax.random.key(0), **config)
  assert full.shape == lite.shape == (4, 16, 16, 1) and full.dtype == np.uint8
  assert np.abs(full.astype(int) - lite.astype(int)).max() > 0
  run.config.task.elastic_patch = 8
  with pytest.raises(ValueError, match="patch_size=8"):
    diffusion.sample_images(run.model, run.params, labels, jax.random.key(0), **config)


@pytest.mark.slow  # 8 devices: make test-slow
def test_eight_devices_train_elastic_dit_like_one(tmp_path):
  overrides = [f"--config.{k}={v}" for k, v in {
      **ELASTIC_RUN, "optimizer.name": "sgd", "optimizer.lr": 0.05}.items()]
  config = "configs/diffusion_digits.py:model=ElasticDiT-T,objective=flow,steps=3"
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  run_python(train_args(one, config, *overrides), devices=1)
  run_python(train_args(eight, config, *overrides, "--config.mesh.data=2",
                        "--config.mesh.fsdp=2", "--config.mesh.tensor=2"), devices=8)
  losses = [np.array([r["train/loss"] for r in metrics_writer.read_jsonl(
      os.path.join(w, "metrics.jsonl")) if "train/loss" in r]) for w in (one, eight)]
  np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5)
  assert len(losses[0]) == 3


def test_paper_scale_config_builds_a_676m_elastic_flow_dit_with_ssba():
  config = config_lib.load("configs/elasticdit_1024.py")
  assert config.task.objective == "flow" and config.model.attention == "ssba:16"
  model = runs.build_model(config.model, config.train.compute_dtype)
  x, t, y = jnp.zeros((1, 128, 128, 16)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, y))
  assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables)) == pytest.approx(
      675.5e6, rel=1e-3)
  assert model.configurations()[0] == (28, 2) and model.configurations()[-1] == (14, 4)
  with pytest.raises(ValueError, match="block=-1"):
    config_lib.load("configs/elasticdit_1024.py:block=-1")
