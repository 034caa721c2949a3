"""Results leaving the ledger: the morning number, `pick` and `submit`, from kept chains only."""
