"""Build the embedded dataset of a profile: ``python -m scribbleseg.data --profile cpu``."""
from __future__ import annotations

import argparse

from scribbleseg.lab.config import load_params, notebook_parameters, repo_root
from scribbleseg.data.embedded import embedded_config, ensure_embedded


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    root = repo_root()
    nb = root / "notebooks" / "00_dataset.ipynb"
    params = {**notebook_parameters(nb), **load_params(nb, args.profile, root / "params")}  # validated
    path = ensure_embedded(embedded_config(**params["dataset"]))
    print(f"embedded dataset ({args.profile}): {path}")


if __name__ == "__main__":
    main()
