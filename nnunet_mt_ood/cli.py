"""``nnunet_mt_ood`` command line."""
import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="nnunet_mt_ood",
        description="Out-of-distribution detection for nnU-Net v2 models. The fit and score commands "
                    "arrive with the spectral OOD feature; see documentation/roadmap.md.")


def main(argv: Optional[List[str]] = None) -> int:
    build_parser().parse_args(argv)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
