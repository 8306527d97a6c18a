"""The variational loop's cost per iteration: what hetflow adds to each circuit evaluation. Run: `make bench`.

200 iterations, each one energy evaluation of a 4-parameter, 2-qubit ansatz for H2 (five Pauli terms, exact
expectations) whose parameters depend on the previous energy, as an optimizer's would:
- through hetflow: `hetflow.run(energy, params, executor="braket")` with `device=local` (a warm worker that
  keeps its LocalSimulator), the engine embedded in this process as in a kernel without a server;
- baseline, same process, same run, interleaved iteration by iteration: `energy(params, LocalSimulator())` called
  directly.
Target: <= 1 ms overhead per iteration (median).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

ITERATIONS = 200
WARMUP = 20


def configure(root: str) -> None:
    for name in ("data", "config", "runtime"):
        os.environ[f"JUPYTER_{name.upper()}_DIR"] = os.path.join(root, name)
    os.makedirs(os.path.join(root, "config"))
    executors = {"braket": {"kind": "braket", "device": "local", "workers": 1}}
    with open(os.path.join(root, "config", "jupyter_server_config.json"), "w") as fh:
        json.dump({"Hetflow": {"executors": executors, "default_executor": "braket"}}, fh)


def energy(params: list[float], device: object) -> float:
    from braket.circuits import Circuit
    from braket.circuits import observables as obs

    terms = [(0.39793742, obs.Z() @ obs.I()), (-0.39793742, obs.I() @ obs.Z())]
    terms += [(-0.01128010, obs.Z() @ obs.Z()), (0.18093120, obs.X() @ obs.X())]
    circuit = Circuit().ry(0, params[0]).ry(1, params[1]).cnot(0, 1).ry(0, params[2]).ry(1, params[3])
    for _, observable in terms:
        circuit.expectation(observable=observable, target=[0, 1])
    values = device.run(circuit, shots=0).result().values  # type: ignore[attr-defined]
    return -1.05237325 + sum(coef * value for (coef, _), value in zip(terms, values, strict=True))


def step(params: list[float], value: float, n: int) -> list[float]:
    """The next parameters: a deterministic walk that depends on the last energy, like an optimizer's."""
    return [p + 0.01 * (value + 1.5) * ((-1) ** (n + i)) for i, p in enumerate(params)]


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        configure(root)
        from braket.devices import LocalSimulator

        import hetflow

        simulator = LocalSimulator()
        params_h = params_d = [0.1, 0.2, 0.3, 0.4]
        times: dict[str, list[float]] = {"hetflow": [], "direct": []}
        for n in range(WARMUP + ITERATIONS):
            start = time.perf_counter()
            value_h = hetflow.run(energy, params_h, cache=False)
            middle = time.perf_counter()
            value_d = energy(params_d, simulator)
            end = time.perf_counter()
            assert abs(value_h - value_d) < 1e-9, (value_h, value_d)  # the same computation, either way
            if n >= WARMUP:
                times["hetflow"].append(middle - start)
                times["direct"].append(end - middle)
            params_h, params_d = step(params_h, value_h, n), step(params_d, value_d, n)

    def ms(values: list[float], q: float = 0.5) -> float:
        return (statistics.median(values) if q == 0.5 else statistics.quantiles(values, n=10)[8]) * 1000

    hetflow_ms, direct_ms = ms(times["hetflow"]), ms(times["direct"])
    overhead = hetflow_ms - direct_ms
    print(f"variational loop: {ITERATIONS} sequential energy evaluations (2 qubits, 4 parameters, 4 observables)")
    print(f"{'':52} {'median':>9} {'p90':>9}")
    print(f"{'LocalSimulator called directly (baseline)':52} {direct_ms:8.3f}ms {ms(times['direct'], 0.9):8.3f}ms")
    print(
        f"{'hetflow.run(..., executor=braket), device=local':52} {hetflow_ms:8.3f}ms {ms(times['hetflow'], 0.9):8.3f}ms"
    )
    print(
        f"ratio {hetflow_ms / direct_ms:.2f}x; overhead per iteration {overhead:.2f} ms (median), target <= 1 ms "
        f"{'met' if overhead <= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
