"""cvlearn: learn slow collective variables from MD with pre-trained geometric GNNs.

This package never imports ``openmm_plugin`` so that learning runs without an MD engine.
"""

__version__ = "0.1.0"
