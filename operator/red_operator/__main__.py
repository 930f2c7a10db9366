"""`python -m red_operator`: the operator alone, as its image runs it (no runtime, no `red` CLI)."""

import argparse
import sys

from red_operator.run import add_arguments, run_from_args

if __name__ == "__main__":
    parser = add_arguments(argparse.ArgumentParser(prog="python -m red_operator", description=__doc__))
    sys.exit(run_from_args(parser.parse_args()))
