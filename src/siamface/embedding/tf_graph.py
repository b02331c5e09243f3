"""A reader for TensorFlow's frozen ``GraphDef`` files (``.pb``), without TensorFlow or its protobuf classes.

A frozen graph is one protobuf message. Protobuf's wire format is a sequence of fields, each a varint key
``(field_number << 3) | wire_type`` followed by its value: wire type 0 a varint, 1 eight bytes, 2 a
varint length then that many bytes (strings, bytes, sub-messages, packed repeated numbers), 5 four bytes.
This module decodes just the messages a frozen inference graph uses (tensorflow/core/framework/*.proto):

* ``GraphDef``: 1 node (repeated NodeDef);
* ``NodeDef``: 1 name, 2 op, 3 input (repeated), 5 attr (map string -> AttrValue: entries 1 key, 2 value);
* ``AttrValue``: 1 list, 2 s (bytes), 3 i, 4 f (float), 5 b, 6 type, 7 shape, 8 tensor;
* ``AttrValue.ListValue``: 2 s, 3 i, 4 f, 5 b, 6 type, 7 shape, 8 tensor (numbers packed or not);
* ``TensorProto``: 1 dtype, 2 tensor_shape, 4 tensor_content (raw little-endian), 5 float_val,
  7 int_val, 10 int64_val, 11 bool_val (a single value is broadcast to the shape, as TensorFlow does);
* ``TensorShapeProto``: 2 dim (repeated Dim: 1 size), 3 unknown_rank.

The result is plain data: a list of `TfNode` (name, op, inputs, attrs with NumPy arrays for tensors).
Unknown fields are skipped, so a newer writer's additions do not break the reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["TfGraphError", "TfNode", "read_graph_def", "parse_graph_def"]

#: tensorflow/core/framework/types.proto DataType -> NumPy dtype (the ones a frozen graph holds).
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64, 10: np.bool_}


class TfGraphError(ModelError):
    """The bytes are not a TensorFlow GraphDef this reader understands."""


@dataclass
class TfNode:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TfGraphError("GraphDef: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TfGraphError("GraphDef: varint longer than 10 bytes")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value): an int for wire types 0/1/5 (raw bits), a memoryview for 2."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise TfGraphError("GraphDef: truncated 64-bit field")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise TfGraphError(f"GraphDef: field {number} runs past the end of its message")
            value = buf[pos : pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > end:
                raise TfGraphError("GraphDef: truncated 32-bit field")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise TfGraphError(f"GraphDef: unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _float(bits: int) -> float:
    return struct.unpack("<f", bits.to_bytes(4, "little"))[0]


def _packed_varints(data: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        v, pos = _varint(data, pos)
        out.append(_signed(v))
    return out


def _numbers(wire: int, value, kind: str) -> list:
    """One occurrence of a repeated numeric field, packed (wire 2) or not."""
    if kind == "float":
        if wire == 2:
            return list(np.frombuffer(bytes(value), "<f4").astype(float))
        return [_float(value)]
    return _packed_varints(value) if wire == 2 else [_signed(value)]


def _shape(buf: memoryview) -> tuple[int, ...] | None:
    dims: list[int] = []
    for number, _, value in _fields(buf):
        if number == 2:
            size = 0
            for n2, _, v2 in _fields(value):
                if n2 == 1:
                    size = _signed(v2)
            dims.append(size)
        elif number == 3 and value:
            return None
    return tuple(dims)


def _tensor(buf: memoryview) -> np.ndarray:
    dtype_code, shape, content = 1, (), None
    values: list = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = _shape(value) or ()
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _numbers(wire, value, "float")
        elif number in (7, 10, 11):
            values += _numbers(wire, value, "int")
    if dtype_code not in _DTYPES:
        raise TfGraphError(f"GraphDef: tensor of unsupported data type {dtype_code}")
    dtype = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        array = np.frombuffer(content, dtype)
    elif values:
        array = np.asarray(values, dtype)
        if array.size == 1 and count > 1:  # TensorFlow stores a constant fill as one value
            array = np.full(count, array[0], dtype)
    else:
        array = np.zeros(count, dtype)
    if array.size != count:
        raise TfGraphError(f"GraphDef: tensor holds {array.size} values for shape {shape}")
    return array.astype(dtype.newbyteorder("=")).reshape(shape)


def _list(buf: memoryview) -> list:
    out: list = []
    for number, wire, value in _fields(buf):
        if number == 2:
            out.append(bytes(value).decode("utf-8", "replace"))
        elif number in (3, 6):
            out += _numbers(wire, value, "int")
        elif number == 4:
            out += _numbers(wire, value, "float")
        elif number == 5:
            out += [bool(v) for v in _numbers(wire, value, "int")]
        elif number == 7:
            out.append(_shape(value))
        elif number == 8:
            out.append(_tensor(value))
    return out


def _attr_value(buf: memoryview) -> Any:
    for number, _wire, value in _fields(buf):
        if number == 1:
            return _list(value)
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number == 3:
            return _signed(value)
        if number == 4:
            return _float(value)
        if number == 5:
            return bool(value)
        if number == 6:
            return int(value)  # a DataType code
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


def _node(buf: memoryview) -> TfNode:
    node = TfNode("", "")
    for number, _, value in _fields(buf):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:
            key, attr = "", None
            for n2, _, v2 in _fields(value):
                if n2 == 1:
                    key = bytes(v2).decode()
                elif n2 == 2:
                    attr = _attr_value(v2)
            node.attrs[key] = attr
    if not node.name or not node.op:
        raise TfGraphError("GraphDef: a node without a name or an op")
    return node


def parse_graph_def(data: bytes) -> list[TfNode]:
    """The nodes of a serialized GraphDef, in file order."""
    buf = memoryview(data)
    nodes = [_node(value) for number, wire, value in _fields(buf) if number == 1 and wire == 2]
    if not nodes:
        raise TfGraphError("GraphDef: no nodes (not a TensorFlow graph?)")
    return nodes


def read_graph_def(path: str | Path) -> list[TfNode]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read TensorFlow graph {path}: {exc}") from None
    return parse_graph_def(data)
