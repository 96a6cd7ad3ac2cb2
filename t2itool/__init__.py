"""t2itool: one pipeline for text-to-image GAN research.

Stages (each reads and writes files on disk): prep -> pretrain-damsm -> train -> sample -> score.
"""

__version__ = "0.1.0"
