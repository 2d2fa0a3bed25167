"""FID InceptionV3 in Flax (effcomp.metrics.inception) against pytorch-fid's architecture.

The PyTorch reference below is written from mseitzer/pytorch-fid `inception.py`
(`FIDInceptionA/C/E_1/E_2`, `fid_inception_v3`, `InceptionV3.forward`) and torchvision
`models/inception.py` (`Inception3`, `BasicConv2d`, `InceptionB/D`); torchvision itself
is not importable beside torch 2.13, so the blocks are re-declared here.
"""

import functools
import sys
import types

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest

from effcomp.convert import pt_inception, state_dict
from effcomp.metrics import inception


# ---- pt_inception-2015-12-05 state-dict keys, from torchvision Inception3.__init__ ----

def _block_convs(kind, p, cin, arg=None):
  """(name, in, out, (kh, kw)) of every BasicConv2d in a torchvision Inception block."""
  one, three = (1, 1), (3, 3)
  if kind == "A":
    return [(f"{p}.branch1x1", cin, 64, one), (f"{p}.branch5x5_1", cin, 48, one),
            (f"{p}.branch5x5_2", 48, 64, (5, 5)), (f"{p}.branch3x3dbl_1", cin, 64, one),
            (f"{p}.branch3x3dbl_2", 64, 96, three), (f"{p}.branch3x3dbl_3", 96, 96, three),
            (f"{p}.branch_pool", cin, arg, one)]
  if kind == "B":
    return [(f"{p}.branch3x3", cin, 384, three), (f"{p}.branch3x3dbl_1", cin, 64, one),
            (f"{p}.branch3x3dbl_2", 64, 96, three), (f"{p}.branch3x3dbl_3", 96, 96, three)]
  if kind == "C":
    c7, row, col = arg, (1, 7), (7, 1)
    return [(f"{p}.branch1x1", cin, 192, one), (f"{p}.branch7x7_1", cin, c7, one),
            (f"{p}.branch7x7_2", c7, c7, row), (f"{p}.branch7x7_3", c7, 192, col),
            (f"{p}.branch7x7dbl_1", cin, c7, one), (f"{p}.branch7x7dbl_2", c7, c7, col),
            (f"{p}.branch7x7dbl_3", c7, c7, row), (f"{p}.branch7x7dbl_4", c7, c7, col),
            (f"{p}.branch7x7dbl_5", c7, 192, row), (f"{p}.branch_pool", cin, 192, one)]
  if kind == "D":
    return [(f"{p}.branch3x3_1", cin, 192, one), (f"{p}.branch3x3_2", 192, 320, three),
            (f"{p}.branch7x7x3_1", cin, 192, one), (f"{p}.branch7x7x3_2", 192, 192, (1, 7)),
            (f"{p}.branch7x7x3_3", 192, 192, (7, 1)), (f"{p}.branch7x7x3_4", 192, 192, three)]
  assert kind == "E"
  return [(f"{p}.branch1x1", cin, 320, one), (f"{p}.branch3x3_1", cin, 384, one),
          (f"{p}.branch3x3_2a", 384, 384, (1, 3)), (f"{p}.branch3x3_2b", 384, 384, (3, 1)),
          (f"{p}.branch3x3dbl_1", cin, 448, one), (f"{p}.branch3x3dbl_2", 448, 384, three),
          (f"{p}.branch3x3dbl_3a", 384, 384, (1, 3)), (f"{p}.branch3x3dbl_3b", 384, 384, (3, 1)),
          (f"{p}.branch_pool", cin, 192, one)]


MIXED = [("A", "Mixed_5b", 192, 32), ("A", "Mixed_5c", 256, 64), ("A", "Mixed_5d", 288, 64),
         ("B", "Mixed_6a", 288, None), ("C", "Mixed_6b", 768, 128), ("C", "Mixed_6c", 768, 160),
         ("C", "Mixed_6d", 768, 160), ("C", "Mixed_6e", 768, 192), ("D", "Mixed_7a", 768, None),
         ("E", "Mixed_7b", 1280, None), ("E", "Mixed_7c", 2048, None)]


def reference_keys():
  """{state-dict key: shape} of `fid_inception_v3()` (num_classes=1008, aux_logits=False)."""
  convs = [("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)),
           ("Conv2d_2b_3x3", 32, 64, (3, 3)), ("Conv2d_3b_1x1", 64, 80, (1, 1)),
           ("Conv2d_4a_3x3", 80, 192, (3, 3))]
  for kind, name, cin, arg in MIXED:
    convs += _block_convs(kind, name, cin, arg)
  keys = {}
  for name, cin, cout, k in convs:
    keys[f"{name}.conv.weight"] = (cout, cin, *k)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      keys[f"{name}.bn.{leaf}"] = (cout,)
    keys[f"{name}.bn.num_batches_tracked"] = ()
  keys["fc.weight"], keys["fc.bias"] = (1008, 2048), (1008,)
  return keys


def _random_state(keys, seed=0):
  rng = np.random.default_rng(seed)
  return {k: (np.array(7, np.int64) if k.endswith("num_batches_tracked")
              else rng.standard_normal(shape, dtype=np.float32)) for k, shape in keys.items()}


def test_reference_key_list_has_94_basic_convs():
  keys = reference_keys()
  assert sum(k.endswith(".conv.weight") for k in keys) == 94 and len(keys) == 94 * 6 + 2


def test_loader_maps_every_pt_inception_key_into_the_flax_tree(tmp_path):
  keys = reference_keys()
  state = _random_state(keys)
  path = str(tmp_path / "pt_inception.npz")
  np.savez(path, **state)
  variables = pt_inception.load_fid_weights(path)
  params, stats = variables["params"], variables["batch_stats"]
  # Transposed conv kernels OIHW → HWIO, an asymmetric one included.
  np.testing.assert_array_equal(params["Conv2d_1a_3x3"]["conv"]["kernel"],
                                state["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
  kernel = params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
  assert kernel.shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(kernel[0, 5, 3, 9],
                                state["Mixed_6b.branch7x7_2.conv.weight"][9, 3, 0, 5])
  np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(params["fc"]["bias"], state["fc.bias"])
  bn = "Mixed_7c.branch3x3dbl_3b.bn"
  np.testing.assert_array_equal(params["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["scale"],
                                state[f"{bn}.weight"])
  np.testing.assert_array_equal(params["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["bias"],
                                state[f"{bn}.bias"])
  np.testing.assert_array_equal(stats["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["mean"],
                                state[f"{bn}.running_mean"])
  np.testing.assert_array_equal(stats["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["var"],
                                state[f"{bn}.running_var"])
  flat = flax.traverse_util.flatten_dict(variables)
  assert len(flat) == len(keys) - 94  # every key but num_batches_tracked
  assert sum(np.size(v) for v in flat.values()) == sum(
      int(np.prod(s)) for k, s in keys.items() if not k.endswith("num_batches_tracked"))


def test_loader_names_missing_and_misshapen_arrays(tmp_path):
  keys = reference_keys()
  state = _random_state({k: s for k, s in keys.items() if not k.startswith("Mixed_5b.branch_pool")})
  state["Mixed_6e.branch1x1.conv.weight"] = np.zeros((192, 768, 3, 3), np.float32)
  path = str(tmp_path / "bad.npz")
  np.savez(path, **state)
  with pytest.raises(ValueError, match=r"not pytorch-fid's.*wrong shape "
                     r"Mixed_6e\.branch1x1\.conv\.weight \(192, 768, 3, 3\)"):
    pt_inception.load_fid_weights(path)
  state["Mixed_6e.branch1x1.conv.weight"] = np.zeros((192, 768, 1, 1), np.float32)
  np.savez(path, **state)
  with pytest.raises(ValueError, match=r"no tensor for 5 leaves: .*Mixed_5b/branch_pool"):
    pt_inception.load_fid_weights(path)
  with pytest.raises(FileNotFoundError, match="convert_pt_inception"):
    pt_inception.load_fid_weights(str(tmp_path / "absent.npz"))


def test_convert_without_torch_is_a_clear_import_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)
  (tmp_path / "x.pth").write_bytes(b"")
  with pytest.raises(ImportError, match="needs torch"):
    pt_inception.convert_pt_inception(str(tmp_path / "x.pth"), str(tmp_path / "x.npz"))


def _random_variables(seed=0):
  """Random He-scaled kernels with identity BatchNorm, for every variable of InceptionV3.
  (Cheaper than `InceptionV3().init`, whose ~190 truncated-normal initializers take ~40 s
  to compile on a CPU; the network and its shapes are the same.)"""
  rng = np.random.default_rng(seed)
  he = lambda s: rng.standard_normal(s, dtype=np.float32) * np.sqrt(2 / np.prod(s[:-1]))
  fill = {"kernel": he, "scale": np.ones, "var": np.ones, "bias": np.zeros, "mean": np.zeros}
  flat = {k: np.asarray(fill[k[-1]](s), np.float32)
          for k, s in state_dict.leaves(inception.abstract_variables()).items()}
  return flax.traverse_util.unflatten_dict(flat)


def test_random_weight_network_gives_2048_features_per_image():
  images = np.random.default_rng(0).uniform(size=(2, 75, 75, 3)).astype(np.float32)
  model = inception.InceptionV3(resize_input=False)
  features = inception.features_fn(_random_variables(), model)(images)
  assert features.shape == (2, 2048) and features.dtype == np.float32
  assert np.all(np.isfinite(features)) and np.all(features >= 0)  # mean of ReLUs
  assert float(np.abs(features[0] - features[1]).max()) > 0


def test_preprocess_is_pytorch_fids_resize_and_scaling():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  for shape in [(2, 13, 17, 3), (1, 401, 350, 3)]:  # upsampling and (non-antialiased) downsampling
    x = rng.uniform(size=shape).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                                           mode="bilinear", align_corners=False) * 2 - 1
    got = inception.preprocess(x)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)
  u8 = rng.integers(0, 256, size=(1, 20, 20, 1), dtype=np.uint8)  # gray uint8 → RGB [0, 1]
  np.testing.assert_allclose(inception.preprocess(u8, resize=False),
                             np.repeat(u8 / 255.0 * 2 - 1, 3, axis=-1), atol=1e-6)
  with pytest.raises(ValueError, match=r"images.shape=\(20, 20, 3\)"):
    inception.preprocess(np.zeros((20, 20, 3)))


# ---- a PyTorch re-declaration of the FID Inception, for numerical comparison ----

@functools.lru_cache(maxsize=None)
def torch_reference():
  torch = pytest.importorskip("torch")
  tnn, F = torch.nn, torch.nn.functional

  class BasicConv2d(tnn.Module):
    def __init__(self, cin, cout, **kw):
      super().__init__()
      self.conv = tnn.Conv2d(cin, cout, bias=False, **kw)
      self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return F.relu(self.bn(self.conv(x)))

  def fid_avg_pool(x):  # pytorch-fid's patch: TF's average pool ignores the padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

  class Block(tnn.Module):
    """Any block: its BasicConv2d children from `_block_convs`, forward given per kind."""
    def __init__(self, kind, cin, arg=None, pool="avg"):
      super().__init__()
      self.kind, self.pool = kind, pool
      for name, ci, co, k in _block_convs(kind, "", cin, arg):
        pad = (k[0] // 2, k[1] // 2)
        stride = 2 if (kind, name) in {("B", ".branch3x3"), ("B", ".branch3x3dbl_3"),
                                       ("D", ".branch3x3_2"), ("D", ".branch7x7x3_4")} else 1
        setattr(self, name[1:], BasicConv2d(ci, co, kernel_size=k, stride=stride,
                                            padding=(0, 0) if stride == 2 else pad))

    def forward(self, x):
      seq = lambda names, y: functools.reduce(lambda h, n: getattr(self, n)(h), names, y)
      if self.kind == "A":  # FIDInceptionA
        out = [self.branch1x1(x), seq(["branch5x5_1", "branch5x5_2"], x),
               seq(["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
               self.branch_pool(fid_avg_pool(x))]
      elif self.kind == "B":  # InceptionB
        out = [self.branch3x3(x), seq(["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
               F.max_pool2d(x, kernel_size=3, stride=2)]
      elif self.kind == "C":  # FIDInceptionC
        out = [self.branch1x1(x), seq([f"branch7x7_{i}" for i in (1, 2, 3)], x),
               seq([f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)], x),
               self.branch_pool(fid_avg_pool(x))]
      elif self.kind == "D":  # InceptionD
        out = [seq(["branch3x3_1", "branch3x3_2"], x),
               seq([f"branch7x7x3_{i}" for i in (1, 2, 3, 4)], x),
               F.max_pool2d(x, kernel_size=3, stride=2)]
      else:  # FIDInceptionE_1 (avg) / FIDInceptionE_2 (max pool)
        b3 = self.branch3x3_1(x)
        bd = seq(["branch3x3dbl_1", "branch3x3dbl_2"], x)
        pooled = (fid_avg_pool(x) if self.pool == "avg"
                  else F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        out = [self.branch1x1(x), torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
               torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1),
               self.branch_pool(pooled)]
      return torch.cat(out, 1)

  class FIDInception(tnn.Module):
    """torchvision Inception3 with pytorch-fid's blocks; forward = pytorch-fid InceptionV3
    (resize 299, 2x − 1, up to pool3) plus the fc layer."""
    def __init__(self):
      super().__init__()
      self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
      self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
      self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
      self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
      self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
      for kind, name, cin, arg in MIXED:
        setattr(self, name, Block(kind, cin, arg, "max" if name == "Mixed_7c" else "avg"))
      self.fc = tnn.Linear(2048, 1008)

    def forward(self, x):
      x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
      x = 2 * x - 1
      x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
      x = F.max_pool2d(x, kernel_size=3, stride=2)
      x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
      for _, name, _, _ in MIXED:
        x = getattr(self, name)(x)
      pool3 = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
      return pool3, self.fc(pool3)

  return types.SimpleNamespace(torch=torch, Block=Block, FIDInception=FIDInception)


def _randomize(module, torch, seed=0):
  """He-scaled conv weights and random BatchNorm statistics, so eval-mode BN is exercised
  and activations keep unit scale through the whole network."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.state_dict().items():
      if name.endswith("conv.weight"):
        fan_in = p[0].numel()
        p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
      elif name.endswith(("bn.weight", "running_var")):
        p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
      elif name.endswith(("bn.bias", "running_mean")):
        p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
  return module.eval()


FLAX_BLOCKS = {"A": lambda arg, pool: inception.InceptionA(arg),
               "B": lambda arg, pool: inception.InceptionB(),
               "C": lambda arg, pool: inception.InceptionC(arg),
               "D": lambda arg, pool: inception.InceptionD(),
               "E": lambda arg, pool: inception.InceptionE(pool)}


@pytest.mark.parametrize("kind,arg,pool", [("A", 32, "avg"), ("B", None, "avg"), ("C", 24, "avg"),
                                           ("D", None, "avg"), ("E", None, "avg"),
                                           ("E", None, "max")])
def test_each_block_matches_its_pytorch_fid_counterpart(kind, arg, pool):
  ref = torch_reference()
  torch = ref.torch
  cin = 16
  block = _randomize(ref.Block(kind, cin, arg, pool), torch, seed=3)
  # Negative inputs too, so zero padding differs from the max pool's -inf padding.
  x = np.random.default_rng(4).normal(size=(2, 9, 9, cin)).astype(np.float32)
  with torch.no_grad():
    want = block(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  flax_block = FLAX_BLOCKS[kind](arg, pool)
  variables, report = state_dict.from_state_dict(
      {k: v.numpy() for k, v in block.state_dict().items()},
      jax.eval_shape(flax_block.init, jax.random.key(0), x), state_dict.module_names)
  assert all(k.endswith("num_batches_tracked") for k in report.unused)
  got = flax_block.apply(variables, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_torch_reference_state_dict_is_the_reference_key_list():
  ref = torch_reference()
  state = ref.FIDInception().state_dict()
  assert {k: tuple(v.shape) for k, v in state.items()} == reference_keys()


def test_converted_checkpoint_reproduces_pytorch_fid_features_and_logits(tmp_path):
  ref = torch_reference()
  torch = ref.torch
  net = _randomize(ref.FIDInception(), torch, seed=5)
  pth = str(tmp_path / inception.FID_WEIGHTS_FILE)
  torch.save(net.state_dict(), pth)
  variables = pt_inception.load_fid_weights(
      pt_inception.convert_pt_inception(pth, str(tmp_path / "fid_inception.npz")))
  images = np.random.default_rng(6).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    want_features, want_logits = (
        t.numpy() for t in net(torch.from_numpy(images).permute(0, 3, 1, 2)))
  model = inception.InceptionV3()
  features, logits = jax.jit(functools.partial(model.apply, return_logits=True))(variables, images)
  np.testing.assert_allclose(features, want_features, rtol=1e-3,
                             atol=1e-3 * np.abs(want_features).max())
  np.testing.assert_allclose(logits, want_logits, rtol=1e-3, atol=1e-3 * np.abs(want_logits).max())
