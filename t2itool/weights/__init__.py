"""Released weights of the official codes -> t2itool snapshots (`t2itool import-weights`): safe reading
(files.py), name tables applied and checked both ways (mapping.py), one importer per model (importers.py) and the
conversion itself (convert.py)."""

from t2itool.weights.convert import (
    ImportedNetworks,
    ImportResult,
    import_weights,
    load_official_networks,
    state_path_for,
)
from t2itool.weights.importers import Importer, OfficialNetwork, get_importer, list_importers, register_importer

__all__ = [
    "ImportResult",
    "ImportedNetworks",
    "Importer",
    "OfficialNetwork",
    "get_importer",
    "import_weights",
    "list_importers",
    "load_official_networks",
    "register_importer",
    "state_path_for",
]
