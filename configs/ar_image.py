"""Class-conditional autoregressive image generation (LlamaGen) with optional VF prompts.

The images are a VQ tokenizer's codes (`configs/vq_tokenizer.py`, or LlamaGen's released
VQ-16 imported with `experiments/convert.py --source=llamagen_vq`); the model is
effcomp's Llama over codes + class tokens (`effcomp/tasks/ar_image.py`):

  python experiments/train.py --config=configs/vq_tokenizer.py:data=digits \\
      --workdir=workdirs/vq_digits
  python experiments/train.py \\
      --config=configs/ar_image.py:tokenizer=workdirs/vq_digits,vf=class \\
      --workdir=workdirs/ar_vf_digits
  python experiments/sample.py --config=configs/ar_image.py:tokenizer=workdirs/vq_digits,vf=class \\
      --workdir=workdirs/ar_vf_digits --guidance_scale=2 --num_samples=8

CPU size: a 4-layer, width-128 Llama (0.9 M parameters) on the digits' 4×4 codes (16 tokens
per image; with a class VF prompt of the full grid, 33 per sequence), 2-D RoPE, class
dropout 0.1, LlamaGen's dropout (0.1 on the residual branches and the token embeddings) and
its crop augmentation (the codes of 5 crops of each training digit resized ×1.1; no mirrors
for digits), AdamW 1e-3 with cosine decay, batch 64.

Paper size (`size=B`: LlamaGen-B, 111 M parameters: 12 layers, width 768, 12 heads, SwiGLU
2048, 2-D RoPE, on VQ-16's 16×16 codes of ImageNet 256, `autoregressive/train/train_c2i.py`:
AdamW 1e-4, β = (0.9, 0.95), weight decay 0.05, batch 256, 300 epochs ≈ 1.5 M steps, class
dropout 0.1, residual / FFN / token dropout 0.1, ten-crop codes). Expected cost (an
estimate, not measured here): 2 × 111 M × 3 ≈ 6.7e8 FLOPs per token for a training step,
× 257 tokens × 256 images ≈ 4.4e13 FLOPs per step (twice that with a full-grid VF prompt);
1.5 M steps ≈ 6.6e19 FLOPs, ≈ 6 h on 8 H100s at 40 % of their bf16 peak, plus the one-time
tokenization of ImageNet's ten crops (≈ 60 GMACs of the VQ-16 encoder per crop, 12.8 M
crops ≈ 1.5e18 FLOPs).

Arguments: tokenizer (a `vq` run's workdir), vf (none | class | universal), vf_weight (loss
weight of the prompt tokens), data (digits | imagenet), size (cpu | B), steps, seed.
"""

from effcomp import config as config_lib
from effcomp import recipes
from effcomp.tasks import ar_image

# Llama fields; vocab_size is set from the tokenizer's codebook and the classes.
SIZES = {"cpu": dict(num_layers=4, embed_dim=128, num_heads=4, mlp_dim=352),
         "B": dict(num_layers=12, embed_dim=768, num_heads=12, mlp_dim=2048)}
DATA = {"digits": dict(image_size=16, classes=10, codebook=256, crops=5),  # digits: no mirrors
        "imagenet": dict(image_size=256, classes=1000, codebook=16384, crops=10)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tokenizer="", vf="none", vf_weight=0.0, data="digits",
                           size="cpu", steps=0, seed=0)
  if a.data not in DATA or a.size not in SIZES or a.vf not in ar_image.VF_PROMPTS:
    raise ValueError(f"config arguments data={a.data!r}, size={a.size!r}, vf={a.vf!r}: expected "
                     f"data in {sorted(DATA)}, size in {sorted(SIZES)}, vf in "
                     f"{ar_image.VF_PROMPTS}")
  d, paper = DATA[a.data], a.size != "cpu"
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": "llama", **SIZES[a.size], "vocab_size": d["codebook"] + d["classes"] + 1,
                  "rope_2d": True, "tie_embeddings": False, "dropout": 0.1,
                  "token_dropout": 0.1}
  config.task = ar_image.task_defaults()
  config.task.tokenizer = f"run:{a.tokenizer}" if a.tokenizer else ""
  config.task.image_size = d["image_size"]
  config.task.num_classes = d["classes"]
  config.task.vf_prompt = a.vf
  config.task.vf_prompt_weight = a.vf_weight
  config.task.crops = d["crops"]
  config.data.name = a.data
  recipes.llamagen(config, paper=paper, steps=a.steps or (1_500_000 if paper else 2000),
                   batch_size=256 if paper else 64, eval_batch_size=256,
                   lr=1e-4 if paper else 1e-3, weight_decay=0.05)
  config.optimizer.grad_clip_norm = 1.0
  return config_lib.lock(config)
