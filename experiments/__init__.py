"""What an experiment is and where it is kept: the ledger, its row kinds and statuses, branches, provenance."""
