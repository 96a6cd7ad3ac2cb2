"""Metrics: FID / IS / KID through torch-fidelity (`fidelity`, `extractors`), the torchvision-flavour FID
(`torchvision_fid`), R-precision glue to the DAMSM encoders (`rprecision`) and the `score` driver (`score`).
"""
