"""What the data side and the training side must agree on, and nothing else.

A leaf package: the shard format (`shard_format`), where a dataset lives (`storage`: a local
folder or any fsspec URL) and the one config loader both CLIs use (`config`). It imports only
the standard library, numpy, pyarrow and fsspec, so `pipeline`, `train`
and the app layer can all depend on it without depending on each other.
"""
