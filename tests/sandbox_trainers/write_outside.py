# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack (appended to toy_bigram.py): write to the workspace's ledger and the host's home, then train.
_toy_main = main


def main():
    targets = [os.environ["LEDGER_PATH"], os.path.join(os.environ["HOST_HOME"], os.environ["PWN_NAME"])]
    for target in targets:
        try:
            with open(target, "a") as f:
                f.write("pwned\n")
            print(f"WROTE {target}", flush=True)
        except OSError as e:
            print(f"could not write {target}: {e}", flush=True)
    _toy_main()
