"""A GenImage detector (`classification` task, real = 0 / ai = 1) trained on one generator.

Detectors (`effcomp/models/detect/`), as GenImage benchmarks them:
  resnet   — ResNet-50 (paper) / a one-block-per-stage bottleneck ResNet of width 16 (cpu)
  cnnspot  — the same network with CNNSpot's blur + JPEG augmentation (`task.augment`)
  spec     — a ResNet-34 (paper) / lite basic-block ResNet (cpu) on the log spectrum
  f3net    — F3Net's FAD + LFS streams ('Both'; small CNN streams, not the official
             Xception, at both sizes: no Xception in effcomp)
  gramnet  — GramNet: ResNet-18 with Gram blocks (paper, its official size) / lite (cpu)
  deit     — DeiT-S (paper) / a 4-layer ViT of width 96 on 4×4 patches (cpu)
  swin     — Swin-T (paper) / a two-stage Swin of width 48 on 2×2 patches, windows of 4 (cpu)
Inputs normalized as each official code does: ImageNet mean/std (torchvision, timm) for
resnet, cnnspot, gramnet, deit and swin; [0, 1] for spec (its spectrum rescales itself);
[−1, 1] for f3net.

CPU size, on a mini-GenImage generator (`experiments/make_genimage.py` writes them):

  python experiments/train.py \\
      --config=configs/genimage_detect.py:detector=cnnspot,generator=mini_ar \\
      --config.data.manual_dir=data/mini_genimage --workdir=workdirs/detect_cnnspot_ar

Paper size (`size=paper`), GenImage's cross-generator task: train on SD 1.4, evaluate on
every generator (`experiments/evaluate.py --config.data.name=genimage_<key>`):

  python experiments/train.py \\
      --config=configs/genimage_detect.py:detector=resnet,generator=sd14,size=paper \\
      --config.data.manual_dir=/data/GenImage --workdir=gs://bucket/genimage_r50_sd14

Paper-size recipe: 224² crops (random-resized for training, center for evaluation), SGD
with Nesterov momentum 0.9, lr 0.05 cosine, batch 256, 40 epochs of SD 1.4's ≈ 324K train
images ≈ 50K steps (GenImage trains ResNet-50 with timm: `--sched cosine --lr 0.05 -b 64`
on 2 GPUs for up to 200 epochs; CNNSpot's own recipe is Adam 1e-4 until its validation
accuracy stops improving). Expected cost (an estimate, not measured here): ResNet-50 is
4.1 GMACs per 224² image, a training step ≈ 3 × 2 × 4.1e9 = 2.5e10 FLOPs per image; 40 epochs
× 324K ≈ 1.3e7 images ≈ 3.2e17 FLOPs, a few minutes of compute on 8 H100s and in practice
bound by decoding the images (≈ 1–2 h at 3000 images/s per host). The transformers train
with DeiT's recipe instead (AdamW, lr 5e-4 · batch / 512, weight decay 0.05, 5 warm-up
epochs, cosine; at CPU size AdamW 1e-3 with weight decay 0.05 and 10 % warm-up): DeiT-S is
4.6 GMACs and Swin-T 4.5 GMACs per 224² image, about ResNet-50's cost.

Arguments: detector, generator (a `effcomp.data.genimage.GENERATORS` key: sd14, …, or
mini_<kind>), size (cpu | paper), steps, seed.
"""

from effcomp import config as config_lib
from effcomp.data import genimage
from effcomp.models.detect import gramnet, resnet, spectrum, swin, vit
from effcomp.tasks import classification

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# detector → (model name, {size: model fields}, task mean, task std, task augment)
DETECTORS = {
    "resnet": ("resnet", {"cpu": resnet.RESNET50_LITE, "paper": resnet.RESNET50},
               IMAGENET_MEAN, IMAGENET_STD, "none"),
    "cnnspot": ("resnet", {"cpu": resnet.RESNET50_LITE, "paper": resnet.RESNET50},
                IMAGENET_MEAN, IMAGENET_STD, "cnnspot"),
    "spec": ("spec", {"cpu": spectrum.SPEC_LITE, "paper": {}}, (), (), "none"),
    "f3net": ("f3net", {"cpu": {"mode": "Both", "widths": (32, 64)},
                        "paper": {"mode": "Both", "widths": (64, 128, 256, 512)}},
              (0.5,) * 3, (0.5,) * 3, "none"),
    "gramnet": ("gramnet", {"cpu": gramnet.GRAMNET_LITE, "paper": gramnet.GRAMNET},
                IMAGENET_MEAN, IMAGENET_STD, "none"),
    "deit": ("deit", {"cpu": vit.DEIT_LITE, "paper": vit.DEIT_S}, IMAGENET_MEAN, IMAGENET_STD,
             "none"),
    "swin": ("swin", {"cpu": swin.SWIN_LITE, "paper": swin.SWIN_T}, IMAGENET_MEAN,
             IMAGENET_STD, "none"),
}
TRANSFORMERS = ("deit", "swin")  # trained with DeiT's AdamW recipe


def get_config(arg=None):
  a = config_lib.parse_arg(arg, detector="resnet", generator="mini_ar", size="cpu", steps=0,
                           seed=0)
  if a.detector not in DETECTORS or a.size not in ("cpu", "paper"):
    raise ValueError(f"config arguments detector={a.detector!r}, size={a.size!r}: expected "
                     f"detector in {sorted(DETECTORS)}, size cpu or paper")
  if a.generator not in genimage.GENERATORS:
    raise ValueError(f"config argument generator={a.generator!r}: expected one of "
                     f"{sorted(genimage.GENERATORS)}")
  name, sizes, mean, std, augment = DETECTORS[a.detector]
  paper = a.size == "paper"
  config = config_lib.base_config()
  config.seed = a.seed
  config.model = {"name": name, "num_classes": 2, **sizes[a.size]}
  config.task = classification.task_defaults()
  config.task.update(mean=mean, std=std, augment=augment, image_size=224 if paper else 0)
  config.data.name = f"genimage_{a.generator}"
  config.data.eval_split = "validation"
  config.data.cache_in_memory = not paper
  steps = a.steps or (50_000 if paper else 400)
  config.train.steps = steps
  config.train.batch_size = 256 if paper else 64
  config.eval.batch_size = 256 if paper else 200
  config.train.log_every = 100 if paper else 50
  config.train.eval_every = config.checkpoint.every_steps = 5000 if paper else steps
  if paper:
    config.data.num_workers = 8
  if a.detector in TRANSFORMERS:
    config.optimizer.name, config.optimizer.weight_decay = "adamw", 0.05
    config.optimizer.lr = 5e-4 * config.train.batch_size / 512 if paper else 1e-3
    # SD 1.4's ≈ 324K training images are ≈ 1266 steps of 256.
    config.optimizer.warmup_steps = 5 * 1266 if paper else steps // 10
  elif paper:
    config.optimizer.name, config.optimizer.lr, config.optimizer.momentum = "sgd", 0.05, 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-4
  else:
    config.optimizer.name, config.optimizer.lr = "adam", 1e-3
  config.optimizer.schedule = "cosine"
  return config_lib.lock(config)
