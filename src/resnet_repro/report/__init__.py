"""Reports: the paper's tables and figures rebuilt from run directories, with the
paper's values beside ours. Reports never train."""

from resnet_repro.report.bench_reports import bench_reports  # noqa: E402  (resnet_repro.report.bench_reports(n_runs))

__all__ = ["bench_reports"]
