"""audiovae: variational autoencoders on 256-bin log-mel speech features.

The package is organised in rooms (see DESIGN.md):

- :mod:`audiovae.audio` — audio I/O, the mel front end, normalisation, the
  Griffin-Lim vocoder and objective metrics.
- :mod:`audiovae.data` — corpora, feature caches, image readers.
- :mod:`audiovae.models` — the VAE core and its dense, convolutional and image variants.
- :mod:`audiovae.training` — trainer, KL schedules, checkpoints.
- :mod:`audiovae.tasks` — evaluate, reconstruct, generate, demo.
"""

__version__ = "0.1.0"

from audiovae.errors import AudioVAEError, InvalidAudioError, InvalidFeatureError, CheckpointError, ConfigError  # noqa: E402
from audiovae.audio.config import MelConfig  # noqa: E402
from audiovae.audio.frontend import MelFrontend  # noqa: E402
from audiovae.audio.vocoder import GriffinLimVocoder  # noqa: E402

__all__ = [
    "__version__",
    "AudioVAEError",
    "InvalidAudioError",
    "InvalidFeatureError",
    "CheckpointError",
    "ConfigError",
    "MelConfig",
    "MelFrontend",
    "GriffinLimVocoder",
]
