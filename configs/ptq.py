"""Post-training quantization of a trained effcomp language model (CBQ and its baselines).

  python experiments/train.py --config=configs/lm_tiny.py --workdir=workdirs/lm_tiny
  python experiments/quantize.py --config=configs/ptq.py:method=cbq,setting=w4a4 \\
      --workdir=workdirs/lm_tiny_cbq_w4a4 --config.source.workdir=workdirs/lm_tiny

Arguments: method (rtn | gptq | smoothquant | awq | cbq | fp), setting (w4a16g128, w3a16,
w2a16, w4a8, w4a4, … see `fake_quant.QuantConfig.parse`). `source.workdir`: any effcomp LM
run (its recorded config gives the model and the data).
Calibration: `calib.num_samples` sequences of the training split (the papers use 128
sequences of 2,048 tokens from C4/WikiText-2; here the training config's own length).
Method options (`options.*`): smoothquant alpha; gptq act_order; cbq window, overlap,
steps, batch_size, lr_step, lr_round, rank, kl_weight, lora_rounding, learn_step,
cross_block, cfp (the CBQ ablation switches each part off; `cbq.CBQConfig` documents them). The measured cost per method is in docs/results/ptq.md.
"""

import ml_collections

from effcomp import config as config_lib

OPTIONS = {
    "fp": {}, "rtn": {}, "gptq": {"act_order": False}, "smoothquant": {"alpha": 0.5}, "awq": {},
    "cbq": {"window": 2, "overlap": 1, "steps": 100, "batch_size": 4, "lr_step": 3e-3,
            "lr_round": 0.1, "rank": 8, "kl_weight": 1.0, "lora_rounding": True,
            "learn_step": True, "cross_block": True, "cfp": True},
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method="gptq", setting="w4a16g128", seed=0)
  if a.method not in OPTIONS:
    raise ValueError(f"config argument method={a.method!r}: expected one of {sorted(OPTIONS)}")
  c = ml_collections.ConfigDict()
  c.method, c.setting, c.seed = a.method, a.setting, a.seed
  c.options = OPTIONS[a.method]
  c.source = {"workdir": ""}
  c.calib = {"split": "train", "num_samples": 64}
  c.eval = {"batch_size": 32}
  return ml_collections.ConfigDict(c).lock()
