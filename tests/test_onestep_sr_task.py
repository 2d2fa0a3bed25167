"""One-step diffusion SR distilled from a diffusion_sr teacher: the student starts as the
teacher, each method's loss terms train, upscaling, config errors, and the 8-device step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import train_losses_on_one_and_eight_devices, upscaled_size
from effcomp import config as config_lib
from effcomp import runs
from effcomp.registry import DEGRADATION_SCORERS
from effcomp.tasks import onestep_sr
from effcomp.train import metrics_writer, run_info

TINY = {"model.model_channels": 8, "model.channel_mult": (1, 2), "model.swin_embed_dim": 16,
        "model.swin_depth": 1, "model.num_head_channels": 8, "model.norm_groups": 4,
        "model.window_size": 4}
RUN = {"train.batch_size": 4, "train.progress_bar": False, "train.log_every": 1,
       "train.eval_every": 0, "checkpoint.async_save": False, "task.patch_size": 32,
       "task.eval_patch": 32, "eval.batch_size": 3}


def _teacher_config():
  return config_lib.load("configs/ditsr_photos.py:steps=2", **{**TINY, **RUN, "task.steps": 4})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_dir):
  """A tiny DiT-SR diffusion_sr run (4 steps of the process) to distill."""
  del data_dir
  workdir = str(tmp_path_factory.mktemp("teacher") / "dit_sr")
  runs.train(_teacher_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def teacher_config(tmp_path_factory):
  """The same teacher's workdir with only its config.json (the config-level tests need no
  weights; training the teacher takes 40 s)."""
  workdir = str(tmp_path_factory.mktemp("teacher_config"))
  run_info.write(workdir, config_lib.to_dict(_teacher_config()), {})
  return workdir


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  """A stand-in ESS encoder run (configs/stand_in_encoder.py, 2 steps)."""
  workdir = str(tmp_path_factory.mktemp("encoder") / "cnn")
  runs.train(config_lib.load("configs/stand_in_encoder.py:steps=2,size=32",
                             **{"train.progress_bar": False, "train.batch_size": 4}), workdir)
  return "run:" + workdir


def _config(teacher, method, steps, **overrides):
  return config_lib.load(f"configs/onestep_sr.py:method={method},teacher={teacher},steps={steps}",
                         **{**RUN, **overrides})


@pytest.mark.slow  # end to end, ≈ 40 s: make test-slow
def test_the_student_starts_as_the_teacher(tmp_path, teacher):
  workdir = str(tmp_path / "regress")
  runs.train(_config(teacher, "regress", 1, **{"optimizer.lr": 0.0, "train.ema_decay": 0.0,
                                               "eval.use_ema": False}), workdir)
  student, master = runs.open(workdir), runs.open(teacher)
  assert student.task == "onestep_sr"
  jax.tree.map(np.testing.assert_array_equal, student.params, master.params)


TERMS = {"teacher", "hr", "hsd", "gan", "disc", "ess", "hfp", "estimator", "balance"}


@pytest.mark.parametrize("method,terms", [
    pytest.param("regress", {"teacher"}, marks=pytest.mark.slow),
    pytest.param("hr", {"hr"}, marks=pytest.mark.slow),
    pytest.param("tadsr", {"teacher", "hsd", "gan", "disc"}, marks=pytest.mark.slow),
    pytest.param("vpdsr", {"teacher", "ess", "hfp", "gan", "disc"}, marks=pytest.mark.slow),
    pytest.param("mor", {"hr", "hsd", "estimator", "balance"}, marks=pytest.mark.slow)])
def test_each_method_trains_its_terms_and_upscales(tmp_path, teacher, encoder, method, terms):
  workdir = str(tmp_path / method)
  summary = runs.train(_config(teacher, method, 2, **{"task.ess_encoder": encoder}), workdir)
  assert 5 < summary["eval"]["psnr"] < 40 and 0 < summary["eval"]["ssim"] <= 1
  rows = [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r]
  logged = {k[len("train/"):] for k in rows[0]} & TERMS
  assert logged == terms and len(rows) == 2
  assert all(np.isfinite(r["train/loss"]) for r in rows)
  if method in ("tadsr", "mor"):  # the student alone upscales (the discriminator rides along)
    assert upscaled_size(tmp_path, workdir, (13, 21)) == (84, 52)
  if method == "mor":
    run = runs.open(workdir)
    student = onestep_sr.make_student(run.model, run.params, run.config)
    y = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    out, info = student.with_info(y, jax.random.key(1))
    assert out.shape == y.shape and info["severity"].shape == (2, 4)
    c = run.config.task
    assert np.all((c.mor_shared + 1 <= info["active"]) & (info["active"] <= c.mor_shared
                                                           + c.mor_top_k))
    master = runs.open(teacher)  # the base stays the teacher's (up to the EMA's rounding)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7),
                 {k: v for k, v in run.params.items() if k != "mor"}, master.params)


def test_mor_ablations_override_the_size(teacher_config):
  assert _config(teacher_config, "mor_nozero", 1).task.mor_zero == 0
  assert _config(teacher_config, "mor_nobalance", 1).task.mor_alpha == 0
  fixed = _config(teacher_config, "mor_fixed", 1).task
  assert fixed.mor_routing == "fixed" and fixed.mor_zero == 4 and fixed.adapter == "mor"
  paper = config_lib.load(
      f"configs/onestep_sr.py:method=mor,size=paper,teacher={teacher_config}").task
  assert (paper.mor_shared, paper.mor_routed, paper.mor_top_k) == (8, 32, 8)


def test_config_errors_name_the_field(tmp_path, teacher_config):
  with pytest.raises(ValueError, match="kappa"):
    runs.setup(_config(teacher_config, "regress", 1, **{"task.kappa": 1.0}))
  with pytest.raises(ValueError, match="hsd_target"):
    runs.setup(_config(teacher_config, "tadsr", 1, **{"task.hsd_target": "noise"}))
  with pytest.raises(ValueError, match="method"):
    _config(teacher_config, "sinsr", 1)
  with pytest.raises(FileNotFoundError, match="config.json"):
    _config(str(tmp_path / "nothing"), "regress", 1)


@pytest.mark.slow  # ≈ 2.5 min each: make test-slow (keeps make test under 20 minutes)
@pytest.mark.parametrize("method", ["tadsr", "mor"])
def test_eight_devices_train_like_one(tmp_path, teacher, method):
  overrides = [f"--config.{k}={v}" for k, v in {
      **RUN, "train.batch_size": 8, "optimizer.name": "sgd", "optimizer.lr": 0.05,
      "train.ema_decay": 0.0, "eval.use_ema": False}.items()]
  one, eight = train_losses_on_one_and_eight_devices(
      tmp_path, f"configs/onestep_sr.py:method={method},teacher={teacher},steps=2", *overrides)
  np.testing.assert_allclose(eight, one, rtol=2e-5)
  assert len(one) == 2


def test_mor_routes_from_a_frozen_scorer():
  if "test_brightness" not in DEGRADATION_SCORERS:  # two scores, no parameters
    DEGRADATION_SCORERS.register("test_brightness")(
        lambda path: lambda y: jnp.stack([jnp.mean(y, (1, 2, 3)) * 0.5 + 0.5,
                                          jnp.std(y, (1, 2, 3))], axis=-1))
  c = onestep_sr.task_defaults()
  c.update(adapter="mor", mor_estimator="test_brightness:-")
  model = runs.build_model(config_lib.load("configs/ditsr_photos.py", **TINY).model, "float32")
  y = jnp.concatenate([jnp.full((1, 16, 16, 3), -0.8), jnp.full((1, 16, 16, 3), 0.8)])
  t = jnp.zeros((2,), jnp.int32)
  variables = onestep_sr.init_variables(c, model, jax.random.key(0), y, t, y)
  mor = variables["params"]["mor"]
  assert "estimator" not in mor
  assert {r["kernel"].shape for r in mor["routers"].values()} == {(2, c.mor_routed + c.mor_zero)}
  fn, info = onestep_sr.denoiser(model, variables["params"], y, c)
  assert fn(y, t).shape == y.shape
  np.testing.assert_allclose(info["severity"][:, 0], [0.1, 0.9], atol=1e-6)
  terms = onestep_sr.mor_losses(info, jnp.zeros((2, 3)), c)
  assert set(terms) == {"balance"} and terms["balance"].shape == (2,)


def test_a_frozen_scorer_first_loaded_inside_jit_loads_eagerly():
  """A scorer whose loader computes (a checkpoint restore, CLIP's prompt embeddings) may be
  first asked for inside the jitted student: its loading must not be traced."""
  if "test_eager" not in DEGRADATION_SCORERS:
    def load(path):
      scale = float(jnp.exp(jnp.asarray(float(path))))  # concrete only outside a trace
      return lambda y: scale * jnp.mean(y, (1, 2, 3))[:, None]
    DEGRADATION_SCORERS.register("test_eager")(load)
  c = onestep_sr.task_defaults()
  c.update(adapter="mor", mor_estimator="test_eager:0.5")
  fn = jax.jit(lambda y: onestep_sr._severity({}, y, c))
  np.testing.assert_allclose(fn(jnp.full((2, 8, 8, 3), 0.5)), np.full((2, 1), 0.5 * np.e ** 0.5),
                             rtol=1e-6)
