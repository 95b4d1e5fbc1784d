#!/usr/bin/env python3
"""Writes seeds/session/*: well-formed MOUNT/NFS/PORTMAP calls, one or a
few per connection, naming handles by the markers the target replaces
(@ROOT@ = the root, @WDIR@ = the writable snapshot directory)."""
import os, struct

def u32(*ws): return b"".join(struct.pack(">I", w) for w in ws)
def u64(v): return struct.pack(">Q", v)
def opaque(b):
    return u32(len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)
def call(xid, prog, vers, proc, args=b""):
    body = u32(xid, 0, 2, prog, vers, proc, 0, 0, 0, 0) + args
    return u32(len(body) | 0x80000000) + body
R, W = b"@ROOT@", b"@WDIR@"
NFS, MNT, PMAP = 100003, 100005, 100000
SATTR = b"\0" * 24
seeds = {
    "null": call(1, NFS, 3, 0),
    "getattr": call(2, NFS, 3, 1, R),
    "lookup": call(3, NFS, 3, 3, R + opaque(b"vm")),
    "read": call(4, NFS, 3, 6, R + u64(0) + u32(4096)),
    "write": call(5, NFS, 3, 7, R + u64(0) + u32(4, 2) + opaque(b"abcd")),
    "readdirplus": call(6, NFS, 3, 17, R + u64(0) + b"\0" * 8 + u32(4096, 8192)),
    "readdir": call(7, NFS, 3, 16, R + u64(0) + b"\0" * 8 + u32(4096)),
    "fsinfo": call(8, NFS, 3, 19, R),
    "fsstat": call(9, NFS, 3, 18, R),
    "access": call(10, NFS, 3, 4, R + u32(31)),
    "commit": call(11, NFS, 3, 21, R + u64(0) + u32(0)),
    "mnt": call(12, MNT, 3, 1, opaque(b"/vw/t")),
    "export": call(13, MNT, 3, 5),
    "getport": call(14, PMAP, 2, 3, u32(NFS, 3, 6, 0)),
    "create": call(15, NFS, 3, 8, W + opaque(b"vmware.log") + u32(0) + SATTR),
    "create_excl": call(16, NFS, 3, 8, W + opaque(b".lck-1") + u32(2) + b"verifier"),
    "mkdir": call(17, NFS, 3, 9, W + opaque(b"sub") + SATTR),
    "create_write_read": call(18, NFS, 3, 8, W + opaque(b"a.log") + u32(0) + SATTR)
        + call(19, NFS, 3, 3, W + opaque(b"a.log")),
    "remove": call(20, NFS, 3, 12, W + opaque(b"vmware.log")),
    "rename": call(21, NFS, 3, 14, W + opaque(b"sub") + W + opaque(b"sub2")),
    "rename_fixed": call(22, NFS, 3, 14, W + opaque(b"vmware.log") + W + opaque(b"d.img")),
    "escape": call(23, NFS, 3, 8, W + opaque(b"../escape") + u32(0) + SATTR),
    "setattr_size": call(24, NFS, 3, 2, W + u32(0, 0, 0, 1) + u64(1 << 20) + u32(0, 0, 0)),
    "readdir_w": call(25, NFS, 3, 17, W + u64(0) + b"\0" * 8 + u32(4096, 8192)),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "session")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
