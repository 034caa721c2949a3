"""What a proposer is told: the digest, the rules of measurement, the board and its notebook."""
