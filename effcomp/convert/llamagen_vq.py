"""LlamaGen's released VQ tokenizers (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`, …) → effcomp's
`VQModel`.

Source: FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` (`VQModel`,
`Encoder`, `Decoder`, `ResnetBlock`, `AttnBlock`, `Downsample`, `Upsample`,
`VectorQuantizer`); `tokenizer/tokenizer_image/vq_train.py` saves {'model', 'optimizer',
'discriminator', 'optimizer_disc', 'steps', 'args'} and the samplers load
`checkpoint['model']` (else 'ema', else 'state_dict'), `CONTAINERS`.

Keys: `encoder.conv_blocks.{i}.res.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}`,
`encoder.conv_blocks.{i}.attn.{j}.{norm,q,k,v,proj_out}` (1×1 convs → Dense kernels),
`encoder.conv_blocks.{i}.downsample.conv`, `encoder.mid.{0,1,2}`, `encoder.norm_out`,
`encoder.conv_out`; the decoder alike with `upsample`; `quant_conv`, `post_quant_conv`;
`quantize.embedding.weight` [K, D] → `codebook`. The buffer `quantize.codebook_used` (the
training-time usage window) is reported unused. A config that trains with the PatchGAN term
gets its discriminator freshly initialized (`FRESH`; the released tokenizers hold none).
"""

import re
from typing import Optional, Tuple

from effcomp.convert.state_dict import CONV, CONV1X1_AS_LINEAR, SAME, Layout, Path
from effcomp.models.vq import patchgan
from effcomp.models.vq.vq_model import VQModel

CONTAINERS = ("model", "ema", "state_dict")
UNUSED = ("quantize.codebook_used",)
FRESH = (patchgan.KEY,)  # variables the checkpoints never fill: left at initialization
# effcomp module name → LlamaGen's (the reused diffusers-style blocks name them otherwise).
_RENAME = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out_0": "proj_out",
           "conv_shortcut": "nin_shortcut"}
_ATTENTION_DENSE = {"to_q", "to_k", "to_v", "to_out_0"}
_LEVEL = re.compile(r"conv_blocks_(\d+)_(res|attn)_(\d+)$")
_RESAMPLE = re.compile(r"conv_blocks_(\d+)_(downsample|upsample)$")
_MID = re.compile(r"mid_(\d+)$")


def check_model(model) -> None:
  if not isinstance(model, VQModel):
    raise ValueError(f"config.model: {type(model).__name__}; LlamaGen's VQ tokenizers are for "
                     "effcomp's 'vq_model' (sizes VQ_16, VQ_8)")


def _module(name: str) -> str:
  for pattern, template in ((_LEVEL, r"conv_blocks.\1.\2.\3"), (_RESAMPLE, r"conv_blocks.\1.\2"),
                            (_MID, r"mid.\1")):
    if pattern.match(name):
      return pattern.sub(template, name)
  return _RENAME.get(name, name)


def name_map(model):
  """effcomp path → (LlamaGen key, Layout) for `model`."""
  check_model(model)

  def lookup(path: Path) -> Optional[Tuple[str, Layout]]:
    if path[0] != "params" or path[1] in FRESH:
      return None
    *modules, leaf = path[1:]
    if not modules and leaf == "codebook":
      return "quantize.embedding.weight", SAME
    key = ".".join(_module(m) for m in modules)
    if leaf == "kernel":
      return f"{key}.weight", CONV1X1_AS_LINEAR if modules[-1] in _ATTENTION_DENSE else CONV
    return f"{key}.{ {'scale': 'weight', 'bias': 'bias'}[leaf]}", SAME

  return lookup
