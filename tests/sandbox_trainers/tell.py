# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# A spy, not a cheat: it writes to its log what a worker could use to tell the scorer from the verifier (its
# folder's path on the host, how old its files are, the first request's shape and positions asked), so the
# test can compare the two. A forger would forge only where these say "scorer".
import sys as _sys

_toy_load = load_model


def load_model(path, device="cpu"):
    model = _toy_load(path, device)
    here = os.getcwd()
    mounts = [ln.split()[3] for ln in open("/proc/self/mountinfo") if ln.split()[4] == here]
    age = time.time() - os.stat(path).st_mtime
    print(f"TELL mount={mounts} age={age:.1f}", file=_sys.stderr, flush=True)
    worker = _sys.modules["__main__"]
    real_read = worker.read_frame
    seen = []

    def spy(stream, max_payload):
        header, array = real_read(stream, max_payload)
        if header.get("kind") == "nll" and not seen:
            seen.append(1)
            at = header.get("at") or []
            rows, last = array.shape[0], array.shape[1] - 1
            shape = (
                "last+one" if [c for _, c in at[:rows]] == [last] * rows and len(at) == 2 * rows else "other"
            )
            print(
                f"TELL rows={rows} length={array.shape[1]} at={shape} since_start={time.time() - T0:.1f}",
                file=_sys.stderr,
                flush=True,
            )
        return header, array

    worker.read_frame = spy
    return model


T0 = time.time()
