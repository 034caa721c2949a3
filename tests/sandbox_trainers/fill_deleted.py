"""Attack: fill the run folder's disk with files that no folder lists. HOLD=fd (the default): opens
FILL_DIR/hidden.bin, deletes it and writes on through the open descriptor, 1 MiB at a time. HOLD=map: 8 MiB
files, each mapped, then closed and deleted, so that only the mapping holds it. Up to FILL_BYTES; a refused
write is retried and said on the log (so the harness's log meets the full disk): only the harness stops it."""

import ctypes
import mmap
import os
import time

folder = os.environ.get("FILL_DIR", ".")
hold = os.environ.get("HOLD", "fd")
limit = int(os.environ.get("FILL_BYTES", str(8 * 2**30)))
chunk = os.urandom(2**20)
written = 0
held = []  # the open file, or the mappings: nothing else keeps the blocks
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]


def map_only(fd, size):
    """mmap(2) itself: Python's mmap object keeps a duplicate descriptor, which would hold the file too."""
    address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    return address


def refused(e):
    try:
        print(f"write refused after {written} bytes: {e}", flush=True)
    except OSError:
        pass  # the log's pipe is gone: keep holding the disk all the same
    time.sleep(0.01)


print(f"filling {folder} with deleted files held by {hold}", flush=True)
if hold == "fd":
    path = os.path.join(folder, "hidden.bin")
    f = open(path, "wb", buffering=0)
    os.unlink(path)
    held.append(f)
    while written < limit:
        try:
            written += f.write(chunk)
        except OSError as e:
            refused(e)
else:
    n = 0
    while written < limit:
        path = os.path.join(folder, f"hidden{n}.bin")
        n += 1
        try:
            with open(path, "w+b", buffering=0) as f:  # mmap wants it readable, even for PROT_READ
                for _ in range(8):
                    f.write(chunk)
                held.append(map_only(f.fileno(), 8 * 2**20))
            written += 8 * 2**20
        except OSError as e:
            refused(e)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
print(f"wrote {written} bytes and was never stopped", flush=True)
