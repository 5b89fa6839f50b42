"""Plain and residual networks of the paper: CIFAR 6n+2 (Sec. 4.2) and ImageNet 18..152
(Table 1), with shortcut options A/B/C. ``build(name, ...)`` is the entry point."""

from resnet_repro.models.registry import ArchSpec, build, count_params, spec

__all__ = ["ArchSpec", "build", "count_params", "spec"]
