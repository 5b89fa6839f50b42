"""resnet_repro: reproduce He, Zhang, Ren, Sun, "Deep Residual Learning for Image
Recognition" (arXiv 1512.03385) from logged runs.

The library is layered in one direction: experiment specs -> run configs -> training
(``resnet_repro.train``) -> run directories (``resnet_repro.runs``) -> reports
(``resnet_repro.report``). The CLI (``resnet_repro.cli``) is a thin shell on top.
"""

__version__ = "0.1.0"
