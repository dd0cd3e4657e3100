"""Student models: backbones, output layers, the cosine classifier."""
from distill.models.registry import build_embedding_model

__all__ = ["build_embedding_model"]
