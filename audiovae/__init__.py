"""audiovae: variational autoencoders on 256-bin log-mel speech features.

The package is organised in rooms (see DESIGN.md):

- :mod:`audiovae.audio` — audio I/O, the mel front end, normalisation, the
  Griffin-Lim vocoder and objective metrics.
- :mod:`audiovae.data` — corpora, feature caches, image readers.
- :mod:`audiovae.models` — the VAE core and its dense, convolutional and image variants.
- :mod:`audiovae.training` — trainer, KL schedules, checkpoints.
- :mod:`audiovae.tasks` — evaluate, reconstruct, generate, demo.

The short way in: ``vae = audiovae.load("run")`` (:mod:`audiovae.api`).
"""

__version__ = "0.1.0"

from audiovae.errors import AudioVAEError, InvalidAudioError, InvalidFeatureError, CheckpointError, ConfigError  # noqa: E402
from audiovae.audio.config import MelConfig  # noqa: E402

# imported on first use: torch takes seconds to import, and commands such as
# `audiovae download` or `audiovae --help` never need it
_LAZY = {"MelFrontend": "audiovae.audio.frontend", "GriffinLimVocoder": "audiovae.audio.vocoder",
         "load": "audiovae.api", "LoadedVAE": "audiovae.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiovae' has no attribute {name!r}")


__all__ = [
    "__version__",
    "load",
    "LoadedVAE",
    "AudioVAEError",
    "InvalidAudioError",
    "InvalidFeatureError",
    "CheckpointError",
    "ConfigError",
    "MelConfig",
    "MelFrontend",
    "GriffinLimVocoder",
]
