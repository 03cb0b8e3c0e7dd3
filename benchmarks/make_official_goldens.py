"""Write tests/golden/official/<family>_<config>.pt: the official implementations' fp64 outputs on random weights.

For every case in official_pairs.BLOCK_CASES (and MODEL_CASES): build effscope's module with random non-trivial
weights, copy them into the official module (official_pairs.load_official), run the official module in fp64 on
effscope's example input, and save {input args, effscope-named state dict, official output, metadata}. The tests
(tests/test_golden_official.py) rebuild effscope's module from the metadata and compare; they never need the
official code. Not run by the tests.

Usage:
    python benchmarks/make_official_goldens.py --official DIR [--out tests/golden/official] [--only NAME ...]

DIR holds the official checkouts (see official_code.py); einops must be importable (the CXV and DW files use it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from official_code import REPOS, Official, commits
from official_pairs import BLOCK_CASES, MODEL_CASES, build_pair


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, type=Path, help="folder holding the official checkouts")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/golden/official")
    p.add_argument("--only", nargs="*", help="case names to (re)write; default all")
    args = p.parse_args(argv)

    official = Official(args.official)
    shas = commits(args.official)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in (*BLOCK_CASES, *MODEL_CASES):
        if args.only and case.name not in args.only:
            continue
        pair = build_pair(case, official, dtype=torch.float64, seed=sum(map(ord, case.name)))
        with torch.no_grad():
            theirs = pair.run_theirs()
            ours = pair.run_ours()
        repo = REPOS[case.name.split("_")[0]] if case.name.split("_")[0] in REPOS else None
        family_repo = next((REPOS[k] for k in REPOS if case.source.startswith(REPOS[k])), repo)
        golden = {
            "target": case.target,
            "knobs": dict(case.knobs),
            # weights and inputs are fp32-representable (build_pair), so fp32 storage loses nothing
            "args": tuple(a.float() if isinstance(a, torch.Tensor) else a for a in pair.args),
            "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in pair.ours.state_dict().items()},
            "output": theirs,
            "source": case.source,
            "official_repo": family_repo,
            "official_commit": shas.get(family_repo, "unknown"),
            "torch_version": str(torch.__version__),
        }
        path = args.out / f"{case.name}.pt"
        torch.save(golden, path)
        size = path.stat().st_size
        total += size
        err = _rel_err(ours, theirs)
        print(f"{case.name:32s} {size / 1e3:8.1f} kB   effscope vs official (fp64) max rel err {err:.1e}")
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
