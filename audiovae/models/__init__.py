"""The VAE core and its variants, built by name through the registry."""

from audiovae.models.base import BaseVAE, ELBOOutput, gaussian_kl
from audiovae.models.registry import available, build_model, config_class, make_config

__all__ = ["BaseVAE", "ELBOOutput", "gaussian_kl", "available", "build_model", "config_class", "make_config"]
