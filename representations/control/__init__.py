"""The control-based representations of the source text, one file each; importing this package
registers them (``ssrl.representations.names()``)."""

from . import grasp2vec, mftcn, tcn  # noqa: F401
