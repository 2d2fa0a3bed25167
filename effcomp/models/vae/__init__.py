"""Latent autoencoders: the Stable Diffusion KL autoencoder (diffusers `AutoencoderKL`),
its diffusers checkpoint I/O and its training loss."""

from effcomp.models.vae import autoencoder_kl  # noqa: F401  (registration)
from effcomp.models.vae.autoencoder_kl import SD_VAE, SMALL_VAE, AutoencoderKL  # noqa: F401
