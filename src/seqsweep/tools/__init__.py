"""Tools around the pipeline, not stages of it: the offline demo and the synthetic sample archives."""
