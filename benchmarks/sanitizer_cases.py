"""A small case of every GPU op (forward and backward) for compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitizer_cases.py --backend cuda

Runs the cases of ``python -m kpfast.info``'s self-test (every op, encoding, loss kind and
decode method on a 2x5x20x15 batch) once on ``--backend``, then synchronises, so every CUDA
kernel of kpfast executes under the tool at least once."""

import argparse
import sys

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="cuda", choices=["cuda", "triton"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sanitizer_cases: no GPU", file=sys.stderr)
        return 2
    from kpfast import backends, info

    device = torch.device("cuda")
    reason = backends._device_reason(args.backend, device)
    if reason is not None:
        print(f"sanitizer_cases: {reason}", file=sys.stderr)
        return 2
    for name, case in info._cases(info._inputs(device)).items():
        case(args.backend)
        torch.cuda.synchronize()
        print("ran", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
