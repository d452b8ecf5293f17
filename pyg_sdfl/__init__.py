"""pyg_sdfl: Structure-Coherent Deep Feature Learning for face alignment on PyTorch Geometric."""
from pyg_sdfl.schemes import LandmarkScheme, available_schemes, get_scheme, register_scheme

__version__ = "0.1.0"
__all__ = ["LandmarkScheme", "available_schemes", "get_scheme", "register_scheme", "__version__"]
