"""ModelService operator: convert, quantize, verify and serve PyTorch models on NVIDIA Triton."""

__version__ = "0.1.0"
GROUP = "modelservice.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"
