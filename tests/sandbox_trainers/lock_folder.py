# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: write no artifact, then make the run folder unreadable, so that the harness's failure to read
# it looks like the machine's (an uncharged infra error) rather than the candidate's.
def main():
    os.chmod(".", 0)
