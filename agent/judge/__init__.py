"""The judge: what a result means, from the noise, paired controls and the fidelity ladder."""
