"""Do the toolchain devices agree with the in-process devices? (prints figures)

The same one-op models, timed by OpenVINO's `benchmark_app` (device file
`openvino-benchmark-app`) and in process (`openvino`), and by `litert-benchmark`
(`litert-benchmark`) and in process (`litert`). Agreement is judged against the noise:
each row's round spread is printed next to the ratio.

    python benchmarks/toolchain_agreement.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> int:
    from oplat.devices import get_device
    from oplat.measure import measure_specs
    from oplat.spec import OpSpec
    from oplat.table import read_table

    specs = [
        OpSpec("conv", 32, 180, 320, c_out=32, kernel=3),
        OpSpec("conv+relu", 28, 180, 320, c_out=28, kernel=3, precision="int8"),
        OpSpec("add", 27, 360, 640),
        OpSpec("depth_to_space", 27, 180, 320, block=3),
    ]
    pairs = [("openvino-benchmark-app", "openvino"), ("litert-benchmark", "litert")]
    print(f"{'entry':44s} {'tool device':24s} {'tool [ms]':>10s} {'in-process [ms]':>16s} {'ratio':>6s} {'spreads [%]':>14s}")
    with tempfile.TemporaryDirectory() as tmp:
        for tool, inproc in pairs:
            results = {}
            for name in (tool, inproc):
                device = get_device(name)
                reason = device.available()
                if reason:
                    print(f"{name}: not available ({reason})")
                    break
                out = Path(tmp) / f"{name}.jsonl"
                measure_specs(specs, device, opset="agree", out=out, progress=False)
                results[name] = {k: r.to_json() for k, r in read_table(out).latest().items()}
            if len(results) < 2:
                continue
            for spec in specs:
                a, b = results[tool][spec.key], results[inproc][spec.key]
                if a["status"] != "ok" or b["status"] != "ok":
                    print(f"{spec.label():44s} {tool:24s} {a['status']} / {b['status']}: {a.get('message') or b.get('message')}")
                    continue
                print(
                    f"{spec.label():44s} {tool:24s} {a['median_ms']:10.3f} {b['median_ms']:16.3f} "
                    f"{a['median_ms'] / b['median_ms']:6.3f} {a['spread_pct']:6.1f} /{b['spread_pct']:6.1f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
