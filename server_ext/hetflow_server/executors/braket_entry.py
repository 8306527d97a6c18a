"""The entry point of a warm Braket Hybrid Job (`braket_entry:main`): a hetflow worker that runs the tasks queued in
its S3 folder until idle (runner.run_s3_queue).

It is shipped in the job's source bundle next to `runner.py` and `braket_device.py`, where all three are top-level
modules; it is never imported from the hetflow_server package. Braket hands the job its hyperparameters in the
JSON file named by AMZN_BRAKET_HP_FILE: `hetflow_queue` is the S3 URI of the job's manifest. The job's role reads
and writes the folder's objects; the device is built once, next to the QPU, and kept for every task.
"""

from __future__ import annotations

import json
import os


def main() -> None:
    import braket_device  # the bundle's copies, top-level in the job
    import runner

    with open(os.environ["AMZN_BRAKET_HP_FILE"]) as fh:
        manifest = json.load(fh)["hetflow_queue"]
    runner.run_s3_queue(manifest, provide=braket_device.provide)
