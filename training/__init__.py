"""Training of the OCT classifier (PyTorch). Never imported by the web app or workers."""
