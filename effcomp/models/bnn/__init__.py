"""Binary networks: ResNet-20 / VGG-small (CIFAR) and ResNet-18/34 (ImageNet).

Every model takes `method` ('none' = the full-precision twin, 'bnn', 'xnor', 'bireal',
'reactnet', 'adabin'), keeps the stem, the classifier and the downsample shortcuts in
full precision (as in the AdaBin paper), and passes training `progress` ∈ [0, 1] to its
binary layers for estimator schedules. `weight_method='none'` keeps the weights real while
the activations are binarized (step 1 of ReActNet's two-step recipe).
"""

from effcomp.models.bnn import resnet, vgg  # noqa: F401  (registration)
