"""Face detectors behind one protocol. Importing this package registers the built-in names; no model is
loaded until a detector's first ``detect`` call."""

from . import blazeface, dlib_detectors, haar, mtcnn, retinaface, yunet  # noqa: F401  (registration)
from .base import BoxDetector, Detector, check_detector, create_detector, detector_names, nms, register_detector

__all__ = ["BoxDetector", "Detector", "check_detector", "create_detector", "detector_names", "nms", "register_detector"]
