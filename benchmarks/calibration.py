"""The calibration table of issue 39: the primary family's rates in the issue's scenarios,
through the very functions the report calls (tests/calibration_rates.py), each with its
Monte Carlo standard error. `make calibrate` runs it at 5,000 studies per scenario.

    PYTHONPATH=src python benchmarks/calibration.py --studies 5000
    PYTHONPATH=src python benchmarks/calibration.py --studies 2000 --no-pooling  # the frontier

`--no-pooling` sets the prior's df to 0 (each run's own seed variance, Welch's test): what
the tests of a variant at 4× the seed SD look like when nothing is pooled at all.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from calibration_rates import SCENARIOS, WIDE, gap_shift, scenario  # noqa: E402

from resnorm.statistics import model  # noqa: E402


def pct(rate: float, se: float) -> str:
    return f"{100 * rate:.1f} ± {100 * se:.1f}"


def row(name: str, studies: int) -> str:
    start = time.time()
    r = scenario(name, studies)
    tails = (f"{r.tail[WIDE]:.2f} ± {r.tail_se(WIDE):.2f} ({WIDE}'s tests); the other tests "
             f"{r.rest_tail:.2f}" if "4x" in name
             else f"≤ {max(r.tail.values()):.2f} (each variant's tests)")
    return (f"| {name} | {pct(r.fwer, r.se(r.fwer))} | {tails} | "
            f"{pct(r.coverage, r.se(r.coverage))} | {pct(r.best_set, r.se(r.best_set))} | "
            f"{pct(r.false_equivalent, r.se(r.false_equivalent))} "
            f"(raw TOST {pct(r.tost_at_margin, r.se(r.tost_at_margin))}) | "
            f"{r.mde_points:.1f} | {time.time() - start:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--no-pooling", action="store_true")
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    args = parser.parse_args()
    if args.no_pooling:
        prior = model.seed_prior
        model.seed_prior = lambda s2, d: (prior(s2, d)[0], 0.0)
    print(f"{args.studies} studies per scenario" + (", no pooling" if args.no_pooling else ""))
    print("| scenario | false \"higher\", family % | tail ÷ nominal | simultaneous coverage % "
          "| best set holds the best % | \"equivalent\" at the margin % | detectable effect, "
          "points (median) | time |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only or SCENARIOS:
        print(row(name, args.studies), flush=True)
    stated = scenario("demo design", args.studies).mde_points
    r = scenario("demo design", args.studies, (("bin", gap_shift(stated)),),
                 ("bn", "bin", "b higher"))
    print(f"\npower at the stated detectable effect ({stated:.1f} points, bin above bn, demo "
          f"design): {pct(r.power, r.se(r.power))} %")


if __name__ == "__main__":
    main()
