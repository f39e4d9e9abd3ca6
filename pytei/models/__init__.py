"""Models the routers and engines load: local directories, pytei's catalogue of models shipped in
PyPI wheels, and hub ids resolved to local snapshots (honouring ``HF_HUB_OFFLINE``)."""
