"""Detectors of AI-generated images (GenImage, issue 26): real/fake classifiers.

Importing this package registers in `effcomp.registry.MODELS`: "resnet" (torchvision's
ResNet, the baseline and the detectors' backbone; CNNSpot is it with its augmentation),
"gramnet" (GramNet's global-texture Gram blocks), "spec" (a classifier on the log
spectrum) and "f3net" (F3Net's frequency-aware decomposition and local frequency
statistics).
"""

from effcomp.models.detect import f3net, gramnet, resnet, spectrum  # noqa: F401  (registration)
