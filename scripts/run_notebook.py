"""Execute a notebook headless with a real kernel (nbclient) and print what each cell showed.

python scripts/run_notebook.py examples/quickstart.ipynb [--output executed.ipynb]

A `jupyter_server_config.py` or `.json` next to the notebook (examples/ has one: the executors the examples use) is
added to the kernel's Jupyter config path.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def text_of(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    if output["output_type"] == "error":
        return "\n".join(output["traceback"]) + "\n"
    data = output.get("data", {})
    return data.get("text/plain", "") + "\n" if "text/plain" in data else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--output", type=Path, help="write the executed notebook here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    notebook = nbformat.read(args.notebook, as_version=4)
    folder = args.notebook.parent.resolve()
    if any((folder / f"jupyter_server_config.{ext}").exists() for ext in ("py", "json")):
        extra = [str(folder), os.getenv("JUPYTER_CONFIG_PATH")]
        os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, extra))
    client = NotebookClient(
        notebook,
        timeout=args.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.notebook.parent)}},
    )
    client.execute()
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type != "code":
            continue
        print(f"── cell {number} ──────────────────────────────────────────")
        print(cell.source)
        shown = "".join(text_of(o) for o in cell.outputs)
        if shown:
            print("→ " + shown.rstrip("\n").replace("\n", "\n  "))
    if args.output:
        nbformat.write(notebook, args.output)
    print(f"\n{args.notebook}: all {sum(c.cell_type == 'code' for c in notebook.cells)} code cells ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
