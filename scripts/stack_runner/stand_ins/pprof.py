"""A small reader of pprof profiles (the protobuf `perftools.profiles.Profile`, plain or gzipped),
enough to check what a service pushes: sample types, samples with their label sets and stacks.
Field numbers are those of github.com/google/pprof proto/profile.proto.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field


class PprofError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise PprofError("truncated varint")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise PprofError("varint too long")


def fields(data: bytes):
    """(field number, wire type, value) of one message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise PprofError(f"field {number} runs past the end")
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise PprofError(f"unsupported wire type {wire}")
        yield number, wire, value


def _ints(wire: int, value) -> list[int]:
    """A repeated integer field: packed (bytes) or one value."""
    if wire == 2:
        out, pos = [], 0
        while pos < len(value):
            item, pos = _varint(value, pos)
            out.append(item)
        return out
    return [value]


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


@dataclass
class Sample:
    locations: list[int]
    values: list[int]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Profile:
    sample_types: list[tuple[str, str]]
    period_type: tuple[str, str]
    samples: list[Sample]
    strings: list[str]
    location_functions: dict[int, list[int]]
    function_names: dict[int, str]

    def stack(self, sample: Sample) -> list[str]:
        """Function names of a sample, leaf first."""
        names = []
        for location in sample.locations:
            for function in self.location_functions.get(location, []):
                names.append(self.function_names.get(function, "?"))
        return names


def parse(raw: bytes) -> Profile:
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    sample_types, samples, strings, period = [], [], [], (0, 0)
    locations: dict[int, list[int]] = {}
    functions: dict[int, int] = {}
    for number, wire, value in fields(data):
        if number == 1:
            vt = {n: v for n, _, v in fields(value)}
            sample_types.append((vt.get(1, 0), vt.get(2, 0)))
        elif number == 2:
            sample = Sample([], [], {})
            raw_labels = []
            for n, w, v in fields(value):
                if n == 1:
                    sample.locations += _ints(w, v)
                elif n == 2:
                    sample.values += [_signed(x) for x in _ints(w, v)]
                elif n == 3:
                    raw_labels.append({k: x for k, _, x in fields(v)})
            sample.labels = raw_labels  # resolved once the string table is read
            samples.append(sample)
        elif number == 4:
            loc = {"lines": []}
            for n, _, v in fields(value):
                if n == 1:
                    loc["id"] = v
                elif n == 4:
                    loc["lines"].append({k: x for k, _, x in fields(v)}.get(1, 0))
            locations[loc.get("id", 0)] = loc["lines"]
        elif number == 5:
            fn = {n: v for n, _, v in fields(value)}
            functions[fn.get(1, 0)] = fn.get(2, 0)
        elif number == 6:
            strings.append(value.decode("utf-8", "replace"))
        elif number == 11:
            vt = {n: v for n, _, v in fields(value)}
            period = (vt.get(1, 0), vt.get(2, 0))
    text = lambda i: strings[i] if 0 <= i < len(strings) else ""  # noqa: E731
    for sample in samples:
        if len(sample.values) != len(sample_types):
            raise PprofError(f"a sample has {len(sample.values)} values for {len(sample_types)} sample types")
        sample.labels = {text(l.get(1, 0)): (text(l[2]) if l.get(2) else str(l.get(3, 0))) for l in sample.labels}
    return Profile([(text(t), text(u)) for t, u in sample_types], (text(period[0]), text(period[1])), samples,
                   strings, locations, {i: text(n) for i, n in functions.items()})
