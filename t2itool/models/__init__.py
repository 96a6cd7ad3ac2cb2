"""GAN models: the recipe interface (`recipe`, `context`), the registry, shared layers (`blocks`) and one package per
model. Importing this package registers every built-in model; look models up with `get_model` / `list_models`.
"""

from t2itool.models import attngan, dfgan, dfgan_ssacn, stackgan, xmcgan  # noqa: F401  (each registers its ModelSpec)
from t2itool.models.registry import GeneratorOutput, ModelSpec, get_model, list_models, register_model

__all__ = ["GeneratorOutput", "ModelSpec", "get_model", "list_models", "register_model"]
