"""The primary family as the code before issue 28 computed it (each run's own seed variance,
the bootstrap correlation), on the calibration suite's simulated studies
(tests/calibration_sim.py), for the before/after table in benchmarks/RESULTS.md. Run it on
the old tree:

    git archive 3cc1913 src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src python benchmarks/calibration_before.py 300

The "after" figures are tests/test_calibration.py's (pytest -s prints them).
"""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from calibration_sim import (draw, RUNS, SIX, TOLERANCE, expected_acc)
from resnorm.study.statistics import (SeedPredictions, adjust_primary, bootstrap_indices,
                                      compare, equivalence_p, interaction, rank_runs)

def study_preds(correct):
    labels = np.zeros(correct.shape[-1], dtype=np.int64)
    return {name: [SeedPredictions(s, labels, np.where(c, 0, 1)) for s, c in enumerate(run)]
            for name, run in zip(RUNS, correct)}

def family(study, idx):
    kw = {"indices": idx, "cache": {}}
    san = compare(study["torch_bn"], study["bn"], "acc", **kw)
    san.update(a="torch_bn", b="bn", test="equivalence", tolerance=TOLERANCE,
               p=equivalence_p(san, TOLERANCE))
    members, weights = [san], [{"torch_bn": 1.0, "bn": -1.0}]
    for i, a in enumerate(SIX):
        for b in SIX[i + 1:]:
            members.append({**compare(study[a], study[b], "acc", **kw), "a": a, "b": b})
            weights.append({a: 1.0, b: -1.0})
    members.append(interaction(study["gn_b8"], study["gn"], study["bn_b8"], study["bn"], "acc", **kw))
    weights.append({"gn_b8": 1.0, "gn": -1.0, "bn_b8": -1.0, "bn": 1.0})
    adjust_primary(members, weights, study, "acc", **kw)
    return members

DIR = ("a higher", "b higher", "GN less sensitive", "BN less sensitive")
def run(name, n_studies, **kw):
    rng = np.random.default_rng(1)
    n = kw.get("n", 150)
    idx = bootstrap_indices(n, 400, rng)
    fw = tail = tests = 0; half = []; tail_nn = tests_nn = 0
    found = 0; cover = 0; eqv = 0
    t0 = time.time()
    for b in range(n_studies // 50):
        batch = draw(rng, 50, **kw)
        for c in batch:
            study = study_preds(c)
            ms = family(study, idx)
            diffs = [m for m in ms if m.get("test") != "equivalence"]
            fw += any(m["verdict"] in DIR for m in diffs)
            for m in diffs:
                tests += 1; tail += m["p"] < 0.003
                if "nn" in (m.get("a"), m.get("b")) or "runs" in m:
                    tests_nn += 1; tail_nn += m["p"] < 0.003
                half.append((m["ci95_simultaneous"][1] - m["ci95_simultaneous"][0]) / 2)
            eqv += ms[0]["equivalence"] == "equivalent"
            by = {(m.get("a"), m.get("b")): m for m in ms}
            found += by[("bn", "bin")]["verdict"] == "b higher"
    print(f"{name}: studies {n_studies} FWER {fw/n_studies:.3f} tail(p<.003) {tail/tests:.4f} "
          f"tail(nn/interaction) {tail_nn/max(tests_nn,1):.4f} median half-width "
          f"{100*np.median(half):.1f} pts; p90 {100*np.quantile(half,0.9):.1f}; "
          f"bn-bin found {found/n_studies:.2f}; sanity 'equivalent' {eqv/n_studies:.3f} "
          f"({time.time()-t0:.0f}s)", flush=True)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
run("a equal SDs N150", N)
run("b nn,bn_b8 2.5x", N, sa={"nn": 0.375, "bn_b8": 0.375})
run("c N600", N, n=600)
run("c N2000", N, n=2000)
run("d run x image SG0.5", N, sg=0.5)
run("power gn+7 bin+14.8", N, deltas={"gn": 0.4, "bin": 0.85})
