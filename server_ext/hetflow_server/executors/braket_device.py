"""The runner's provider for braket tasks: it hands each task `device` and `shots`. Runs where the task runs (a warm
local worker, or a Hybrid Job's container, where it is shipped next to the runner); imports braket only there.

A device is built once per worker and kept: importing braket costs seconds, and a variational loop runs thousands of
sub-second circuits that must not pay for it each time.
"""

from __future__ import annotations

from typing import Any

# the names `device=` takes for Braket's local simulators ("local" is the state-vector one)
LOCAL_SIMULATORS = {
    "local": "braket_sv",
    "braket_sv": "braket_sv",
    "braket_dm": "braket_dm",
    "braket_ahs": "braket_ahs",
}

_devices: dict[str, Any] = {}


def device(name: str) -> Any:
    """The device called `name`: a local simulator, or an AwsDevice for an ARN (in a Hybrid Job, next to it)."""
    if name not in _devices:
        if name in LOCAL_SIMULATORS:
            from braket.devices import LocalSimulator

            _devices[name] = LocalSimulator(LOCAL_SIMULATORS[name])
        else:
            from braket.aws import AwsDevice

            _devices[name] = AwsDevice(name)
    return _devices[name]


def warm() -> None:
    """Import braket and run one tiny circuit, so that the first task starts as fast as the thousandth."""
    from braket.circuits import Circuit

    device("local").run(Circuit().h(0), shots=1).result()


def provide(context: dict[str, Any]) -> dict[str, Any]:
    return {"device": device(context["device"]), "shots": context["shots"]}
