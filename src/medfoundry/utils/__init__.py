"""Small helpers every stage may use: atomic writes, JSON files, worker pools, devices, typed configs.

The bottom layer: it imports nothing else of medfoundry (but :class:`medfoundry.MedfoundryError`).
"""
