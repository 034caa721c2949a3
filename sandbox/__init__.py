"""The sandbox: budgets enforced from outside, isolation, the two phases, and the verified scorer."""
