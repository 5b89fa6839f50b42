"""Training: validated run configs (``config``), learning-rate schedules (``schedule``),
checkpoints (``checkpoint``) and the loop itself (``loop.fit``)."""
