"""Thrift's compact protocol, generically: a struct decoded into its fields (id, wire type, value) in wire order and
encoded back to the same bytes, so a Parquet footer can be edited field by field without a schema compiler."""
from __future__ import annotations

import struct
from dataclasses import dataclass

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_INTEGERS = (I16, I32, I64)


class ThriftError(ValueError):
    """Bytes that are not a compact-protocol struct of the kinds handled here."""


@dataclass
class Field:
    """One field of a struct: its id, its compact wire type and its value (a list's value is `Items`)."""

    id: int
    type: int
    value: object


@dataclass
class Items:
    """A list or set: the element wire type and the elements."""

    type: int
    values: list


Struct = list  # list[Field], in wire order


def field(fields: Struct, field_id: int) -> Field | None:
    """The field with this id, or None."""
    return next((f for f in fields if f.id == field_id), None)


def decode_struct(data: bytes | memoryview, pos: int = 0) -> tuple[Struct, int]:
    """(fields, position after the struct's STOP) of the struct at `pos`."""
    view = memoryview(data).cast("B")  # unsigned bytes whatever the exporter's format
    fields: Struct = []
    last = 0
    while True:
        header = view[pos]
        pos += 1
        kind = header & 0x0F
        if kind == STOP:
            return fields, pos
        delta = header >> 4
        if delta:
            field_id = last + delta
        else:
            raw, pos = _varint(view, pos)
            field_id = _unzigzag(raw)
        if kind in (TRUE, FALSE):
            value: object = kind == TRUE
        else:
            value, pos = _value(view, pos, kind)
        fields.append(Field(field_id, kind, value))
        last = field_id


def encode_struct(fields: Struct) -> bytes:
    """The compact-protocol bytes of a struct (short field headers where the id grows by 1..15, as Thrift writes)."""
    out = bytearray()
    _write_struct(out, fields)
    return bytes(out)


def _write_struct(out: bytearray, fields: Struct) -> None:
    last = 0
    for f in fields:
        kind = (TRUE if f.value else FALSE) if f.type in (TRUE, FALSE) else f.type
        if 0 < f.id - last <= 15:
            out.append((f.id - last) << 4 | kind)
        else:
            out.append(kind)
            _write_varint(out, _zigzag(f.id))
        if kind not in (TRUE, FALSE):
            _write_value(out, kind, f.value)
        last = f.id
    out.append(STOP)


def _value(view: memoryview, pos: int, kind: int) -> tuple[object, int]:
    if kind in _INTEGERS:
        raw, pos = _varint(view, pos)
        return _unzigzag(raw), pos
    if kind == BYTE:
        return struct.unpack_from("<b", view, pos)[0], pos + 1
    if kind in (TRUE, FALSE):  # a boolean element of a list: one byte
        return view[pos] == TRUE, pos + 1
    if kind == DOUBLE:
        return bytes(view[pos:pos + 8]), pos + 8
    if kind == BINARY:
        size, pos = _varint(view, pos)
        return bytes(view[pos:pos + size]), pos + size
    if kind in (LIST, SET):
        header = view[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(view, pos)
        values = []
        for _ in range(size):
            value, pos = _value(view, pos, element)
            values.append(value)
        return Items(element, values), pos
    if kind == STRUCT:
        return decode_struct(view, pos)
    raise ThriftError(f"compact wire type {kind} is not handled")


def _write_value(out: bytearray, kind: int, value: object) -> None:
    if kind in _INTEGERS:
        _write_varint(out, _zigzag(value))
    elif kind == BYTE:
        out += struct.pack("<b", value)
    elif kind in (TRUE, FALSE):
        out.append(TRUE if value else FALSE)
    elif kind == DOUBLE:
        out += value
    elif kind == BINARY:
        _write_varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        size = len(value.values)
        if size < 15:
            out.append(size << 4 | value.type)
        else:
            out.append(0xF0 | value.type)
            _write_varint(out, size)
        for item in value.values:
            _write_value(out, value.type, item)
    elif kind == STRUCT:
        _write_struct(out, value)
    else:
        raise ThriftError(f"compact wire type {kind} is not handled")


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _write_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)
