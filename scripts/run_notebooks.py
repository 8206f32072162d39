#!/usr/bin/env python3
"""Executes every notebook in notebooks/ against one output directory, headless
(nbclient), and fails on the first error. With --save DIR, writes the executed
notebooks (with their charts) there.

Usage: python3 scripts/run_notebooks.py OUT_DIR [--save DIR]
"""

import argparse
import os
import pathlib
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--save", type=pathlib.Path)
    args = parser.parse_args()
    os.environ["LOYALTY_OUT"] = str(args.out_dir.resolve())
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        print("no notebooks found", file=sys.stderr)
        return 1
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError as error:
            print(f"{path.name}: {error}", file=sys.stderr)
            return 1
        figures = sum(
            1 for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
        )
        print(f"{path.name}: executed against {args.out_dir}, {figures} figures")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, args.save / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
