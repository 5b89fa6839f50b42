"""Data sets: CIFAR-10 from any of its usual forms (``cifar``), batched tensor
augmentation (``augment``)."""
