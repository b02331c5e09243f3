"""Presentation-attack detection: is the face in front of the camera a live person?

* `combined`: the passive decision on one image (`PassiveCheck`): a pretrained anti-spoofing CNN pair
  (`cnn`, MiniFASNet, Apache-2.0), the project's colour-texture model and the frame cue (`passive`),
  combined by a logistic model with one threshold.
* `passive`: the colour-texture model trained by the project on printed-photo and screen-replay attacks
  (`PassiveLiveness`) and the frame cue (a photo's or screen's straight border).
* `active`: several frames — a random challenge (turn left/right, come closer) checked from landmarks, and
  a parallax test: a flat photo moves its landmarks like a plane, a real head does not (`ActiveCheck`).
* `metrics`: APCER per attack type, BPCER, ACER (ISO/IEC 30107-3).
"""

from .combined import PassiveCheck, PassiveScore
from .metrics import PadReport, pad_report
from .passive import LivenessScore, PassiveLiveness

__all__ = ["LivenessScore", "PadReport", "PassiveCheck", "PassiveLiveness", "PassiveScore", "pad_report"]
