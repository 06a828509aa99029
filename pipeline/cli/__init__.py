"""The `medtfx` command line (pipeline/cli/main.py): argparse and one call per command; the use
cases they call live below, in pipeline/ops/ and pipeline/monitor/."""
