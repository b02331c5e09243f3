"""Presentation-attack detection: is the face in front of the camera a live person?

* `passive`: one image — a colour-texture model trained by the project on printed-photo and screen-replay
  attacks (`PassiveLiveness`).
* `active`: several frames — a random challenge (turn left/right, come closer) checked from landmarks, and
  a parallax test: a flat photo moves its landmarks like a plane, a real head does not (`ActiveCheck`).
* `metrics`: APCER per attack type, BPCER, ACER (ISO/IEC 30107-3).
"""

from .metrics import PadReport, pad_report
from .passive import LivenessScore, PassiveLiveness

__all__ = ["LivenessScore", "PadReport", "PassiveLiveness", "pad_report"]
