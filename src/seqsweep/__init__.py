"""seqsweep: a reproducible DVC + MLflow pipeline comparing sequence classifiers on UCI HAR and IMDB."""

__version__ = "0.1.0"
