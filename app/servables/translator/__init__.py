"""The English->Spanish translator servable (TensorFlow Transformer)."""
from .servable import TranslatorServable  # noqa: F401
