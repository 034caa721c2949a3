"""The offline search: the space of knobs and techniques, past trials, and a TPE sampler."""
