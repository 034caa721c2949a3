"""The morning report: the facts of a run, its sections, their rendering, and the progress plot."""
