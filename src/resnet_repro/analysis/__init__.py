"""Analyses of networks and runs: complexity (params, FLOPs; paper Table 1 and 6)."""
