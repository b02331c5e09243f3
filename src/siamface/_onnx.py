"""ONNX Runtime session settings shared by every model siamface runs.

Threads do not spin while waiting for work (``session.intra_op.allow_spinning = 0``): on a 2-core machine
where a capture thread, a second model or another process also wants the CPU, spinning threads take the
cores from the work itself. Measured on RetinaFace at 640x480 with one core busy elsewhere: 40 ms per frame
with spinning, 21-25 ms without; on an idle machine the difference is within noise.
"""

from __future__ import annotations


def session_options(threads: int):
    """`onnxruntime.SessionOptions` for `threads` intra-op threads, sequential, all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so
