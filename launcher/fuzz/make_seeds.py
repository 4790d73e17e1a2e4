#!/usr/bin/env python3
"""Writes a few valid inputs into corpus/<target>/ so that each fuzz target starts from
something it accepts: `python3 make_seeds.py` from launcher/fuzz, before `cargo fuzz run`.

The BTF seed is built here field by field (the layout of include/uapi/linux/btf.h), a blob of
a few hundred bytes: the kernel's own BTF is 5 MB, far too large for a fuzzing input.
"""

import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_STRUCT, KIND_ENUM, KIND_ENUM64 = 1, 2, 4, 6, 19


class Btf:
    def __init__(self):
        self.types = b""
        self.strings = b"\0"

    def string(self, text):
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, name, kind, vlen, size_or_type, body=b"", kind_flag=False):
        info = vlen | kind << 24 | int(kind_flag) << 31
        self.types += struct.pack("<III", self.string(name), info, size_or_type) + body

    def enum(self, name, constants, signed=False):
        body = b"".join(struct.pack("<Ii", self.string(c), v) if signed
                        else struct.pack("<II", self.string(c), v) for c, v in constants)
        self.add(name, KIND_ENUM, len(constants), 4, body, signed)

    def enum64(self, name, constants):
        body = b"".join(struct.pack("<IQ", self.string(c), v) for c, v in constants)
        self.add(name, KIND_ENUM64, len(constants), 8, body)

    def build(self):
        header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24,
                             0, len(self.types), len(self.types), len(self.strings))
        return header + self.types + self.strings


def btf_seeds():
    blob = Btf()
    blob.add("int", KIND_INT, 0, 4, struct.pack("<I", 32))
    blob.add("", KIND_PTR, 0, 1)
    blob.add("pair", KIND_STRUCT, 1, 4, struct.pack("<III", blob.string("a"), 1, 0))
    blob.enum("bpf_cmd", [("BPF_MAP_CREATE", 0), ("BPF_MAP_LOOKUP_ELEM", 1),
                          ("BPF_PROG_LOAD", 5), ("__MAX_BPF_CMD", 6)])
    blob.enum("signed", [("MINUS_ONE", -1), ("ONE", 1)], signed=True)
    blob.enum64("bpf_attach_type", [("BPF_CGROUP_INET_INGRESS", 0), ("BPF_XDP", 37),
                                    ("__MAX_BPF_ATTACH_TYPE", 38)])
    yield "tiny-vmlinux", blob.build()


def policy_value_seeds():
    # The first byte picks cmds, maps, progs or attachs.
    values = [
        (0, "map_create:prog_load:btf_load"),
        (0, "BPF_MAP_CREATE,BPF_TOKEN_CREATE"),
        (1, "array:hash"),
        (1, "any"),
        (2, "xdp,socket_filter"),
        (2, "0x40"),
        (3, "xdp:cgroup_inet_ingress"),
        (3, "none"),
        (3, "0x1:xdp"),
    ]
    for kind, value in values:
        yield f"kind{kind}-{value.replace(':', '_').replace(',', '_')}", bytes([kind]) + value.encode()


def policy_file_seeds():
    yield "strings", b'cmds = "map_create:prog_load:btf_load"\nprogs = "xdp"\nattachs = "xdp"\n'
    yield "arrays", b'# comment\nmaps = ["array", "hash"]\ncmds = ["any"]\n'
    yield "bad-name", b'progs = "xpd"\n'


def mountinfo_seeds():
    yield "bpffs", (
        b"22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
        b"36 22 0:40 / /sys/fs/bpf rw,relatime shared:9 master:1 - bpf bpf "
        b"rw,uid=0,delegate_cmds=map_create:prog_load,delegate_maps=any\n"
        b"40 1 0:50 / /tmp/a\\040b rw - bpf none rw\n"
    )


def main():
    for target, seeds in [
        ("btf_enums", btf_seeds()),
        ("policy_value", policy_value_seeds()),
        ("policy_file", policy_file_seeds()),
        ("mountinfo", mountinfo_seeds()),
    ]:
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds:
            (directory / f"seed-{name}").write_bytes(data)
            print(f"{directory / ('seed-' + name)}: {len(data)} bytes")


if __name__ == "__main__":
    main()
