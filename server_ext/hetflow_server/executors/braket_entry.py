"""The entry point of a Braket Hybrid Job that runs one hetflow task (`braket_entry:main`).

It is shipped in the job's source bundle next to `runner.py` and `braket_device.py`, where all three are top-level
modules; it is never imported from the hetflow_server package. Braket hands the job its hyperparameters in the
JSON file named by AMZN_BRAKET_HP_FILE: `hetflow_manifest` is the S3 URI of the task's manifest (see
runner.run_s3). The job's role reads and writes the task's objects; the device is built next to the QPU.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    import braket_device  # the bundle's copies, top-level in the job
    import runner

    with open(os.environ["AMZN_BRAKET_HP_FILE"]) as fh:
        manifest = json.load(fh)["hetflow_manifest"]
    status = runner.run_s3(manifest, provide=braket_device.provide)
    if status:
        sys.exit(status)
