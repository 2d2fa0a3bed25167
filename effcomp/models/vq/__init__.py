"""Vector-quantized image tokenizers: LlamaGen's VQGAN (`vq_model.VQModel`)."""

from effcomp.models.vq import vq_model  # noqa: F401  (registration)
from effcomp.models.vq.vq_model import VQ_8, VQ_16, VQ_SMALL, VQModel  # noqa: F401
