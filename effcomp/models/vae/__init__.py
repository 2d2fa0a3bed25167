"""Latent autoencoders: the Stable Diffusion KL autoencoder (diffusers `AutoencoderKL`),
its diffusers checkpoint I/O and its training loss; the tiny DWT autoencoder (T-DVAE)."""

from effcomp.models.vae import autoencoder_kl, tiny  # noqa: F401  (registration)
from effcomp.models.vae.autoencoder_kl import SD_VAE, SMALL_VAE, AutoencoderKL  # noqa: F401
from effcomp.models.vae.tiny import SD_TINY_VAE, SMALL_TINY_VAE, TinyVAE  # noqa: F401
