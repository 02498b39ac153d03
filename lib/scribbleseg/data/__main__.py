"""Build the embedded dataset of a profile: ``python -m scribbleseg.data --profile cpu``."""
from __future__ import annotations

import argparse

import yaml

from scribbleseg.config import notebook_parameters, repo_root
from scribbleseg.data.embedded import embedded_config, ensure_embedded


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    root = repo_root()
    nb = root / "notebooks" / "00_dataset.ipynb"
    params = notebook_parameters(nb)
    params.update(yaml.safe_load((root / "params" / args.profile / "00_dataset.yaml").read_text()) or {})
    path = ensure_embedded(embedded_config(**params["dataset"]))
    print(f"embedded dataset ({args.profile}): {path}")


if __name__ == "__main__":
    main()
