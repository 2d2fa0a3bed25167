"""Detectors of AI-generated images (GenImage, issue 26): real/fake classifiers.

Importing this package registers in `effcomp.registry.MODELS`: "resnet" (torchvision's
ResNet, the baseline and the detectors' backbone; CNNSpot is it with its augmentation),
"gramnet" (GramNet's global-texture Gram blocks), "spec" (a classifier on the log
spectrum), "f3net" (F3Net's frequency-aware decomposition and local frequency
statistics), "deit" (a ViT: DeiT-S) and "swin" (Swin-T).
"""

from effcomp.models.detect import (  # noqa: F401 (registration)
    f3net, gramnet, resnet, spectrum, swin, vit)
