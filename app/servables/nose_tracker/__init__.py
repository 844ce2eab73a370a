"""The nose tracker servable (OpenCV DNN)."""
from .servable import NoseTrackerServable  # noqa: F401
