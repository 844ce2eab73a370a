"""Built-in servables, named by ``"servable"`` in a model's ``model.json``. A user's model
names ``module:Class`` from code in its own folder instead (see README "Bring your own model")."""
from .face_detector import FaceDetectorServable
from .nose_tracker import NoseTrackerServable
from .translator import TranslatorServable

BUILTIN = {"face_detector": FaceDetectorServable, "nose_tracker": NoseTrackerServable,
           "translator": TranslatorServable}
