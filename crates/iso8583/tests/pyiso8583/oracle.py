"""pyiso8583 as an independent oracle for acquiro's codec.

    oracle.py generate SPEC DIALECT_TOML COUNT SEED   random messages encoded by pyiso8583, as JSON lines
    oracle.py check SPEC                              JSON lines on stdin, decoded and re-encoded by pyiso8583

SPEC is a pyiso8583 spec name (default, default_ascii). Field types (which pyiso8583 does not model) come
from acquiro's dialect file so that generated values are valid for both. Each JSON line is
{"hex": frame, "mti": MTI, "fields": {"2": value, ...}} with binary fields as uppercase hex.
"""

import json
import random
import string
import sys
import tomllib

import iso8583
import iso8583.specs

ALPHABET = {
    "n": string.digits,
    "x+n": string.digits,
    "z": string.digits * 9 + "=",
    "an": string.ascii_letters + string.digits + " ",
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
}
MAX_VAR = 120  # as in the Rust generator


def value(rng, field):
    if field.get("length", "fixed") == "fixed":
        length = field["max"]
    else:
        length = rng.randint(0, min(field["max"], MAX_VAR))
    kind = field["type"]
    if kind == "b":
        return rng.randbytes(length).hex().upper()
    text = "".join(rng.choice(ALPHABET[kind]) for _ in range(length))
    if kind == "x+n" and length:
        text = rng.choice("CD") + text[1:]
    return text


def generate(spec_name, dialect_path, count, seed):
    spec = getattr(iso8583.specs, spec_name)
    with open(dialect_path, "rb") as f:
        fields = tomllib.load(f)["fields"]
    rng = random.Random(seed)
    for _ in range(count):
        doc = {"t": rng.choice(["0100", "0110", "0200", "0210", "0400", "0800"])}
        for number, field in fields.items():
            if rng.random() < 0.3:
                doc[number] = value(rng, field)
        raw, _ = iso8583.encode(doc, spec)
        decoded, _ = iso8583.decode(bytes(raw), spec)
        print(json.dumps({"hex": bytes(raw).hex().upper(), "mti": decoded["t"], "fields": fields_of(decoded)}))


def fields_of(decoded):
    return {k: v for k, v in decoded.items() if k not in ("t", "p", "1", "h")}


def check(spec_name):
    spec = getattr(iso8583.specs, spec_name)
    checked = mismatches = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        raw = bytes.fromhex(case["hex"])
        checked += 1
        try:
            decoded, _ = iso8583.decode(raw, spec)
            again, _ = iso8583.encode(dict(decoded), spec)
        except Exception as e:  # the oracle's own error type varies by version
            mismatches += 1
            print(f"case {checked}: pyiso8583 rejected it: {e}", file=sys.stderr)
            continue
        problems = []
        if decoded["t"] != case["mti"]:
            problems.append(f"mti {decoded['t']} != {case['mti']}")
        got = fields_of(decoded)
        if got != case["fields"]:
            diff = sorted(set(got.items()) ^ set(case["fields"].items()))
            problems.append(f"fields differ: {diff[:4]}")
        if bytes(again) != raw:
            problems.append("re-encoding differs")
        if problems:
            mismatches += 1
            print(f"case {checked}: {'; '.join(problems)}", file=sys.stderr)
    print(f"checked {checked}, mismatches {mismatches}")
    sys.exit(1 if mismatches or not checked else 0)


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
