"""Reports: the paper's tables and figures rebuilt from run directories, with the
paper's values beside ours. Reports never train."""
