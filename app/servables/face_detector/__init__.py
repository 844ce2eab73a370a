"""The face detector servable (our CNN, OpenCV DNN)."""
from .servable import FaceDetectorServable  # noqa: F401
