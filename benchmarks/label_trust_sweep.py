"""Training runs behind docs/results.md's "Label trust by a probe" table (a first, 20 Newsgroups-only study).

    python benchmarks/label_trust_sweep.py RUN_DIR OUT.jsonl WORK labels      # clean, 30% uniform, 30% to partner
    python benchmarks/label_trust_sweep.py RUN_DIR OUT.jsonl WORK redundant   # a redundant regime's run, as is

RUN_DIR/WORK: an evidence.py text work dir (``evidence.py text --regime clean --work WORK``, RUN_DIR = WORK/run).
Methods at ratios 0.3 and 0.5, seeds 0-4, 8 epochs, equal steps: rs2, dynsel (default), dynsel with
--label-trust probe, the same with --class-quota content, and cleanlab's issues dropped then rotation.
Each finished run is appended to OUT.jsonl. The helpers (flips, probes) are in _label_trust_lib.py.
"""
import sys, json, math, dataclasses, numpy as np, torch, pathlib
exec(open(__import__("pathlib").Path(__file__).with_name("_label_trust_lib.py")).read())
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from evidence import text_task, train_and_evaluate
from dynsel_cli.plan import compute_plan
from dynsel_cli.config import PlanConfig
from dynsel_cli.plan.rotation import weighted_rotation_epochs
from dynsel_cli.plan.budget import epoch_budget
from cleanlab.filter import find_label_issues
torch.set_num_threads(1)
out = open(sys.argv[2], "a")
runp = pathlib.Path(run)
task = text_task(runp, pathlib.Path(sys.argv[3]), "wordllama")
regimes = [("clean", y0, None), ("uniform30", y_uni, fl_uni), ("pair30", y_cc, fl_cc)] if sys.argv[4] == "labels" else [(sys.argv[4], y0, None)]
for name, y, fl in regimes:
    tables = dataclasses.replace(t, samples=dataclasses.replace(t.samples, labels=y))
    P = cv_probs("features", y); keep_cl = ~find_label_issues(y, P)
    task.y_train = torch.from_numpy(y)
    for r in (0.3, 0.5):
        budget = epoch_budget(r, n)
        for seed in range(5):
            variants = {
                "rs2": dict(method="rs2"), "dynsel": {}, "dynsel-probe": dict(label_trust="probe"),
                "dynsel-probe-content": dict(label_trust="probe", class_quota="content"),
            }
            for v, kw in variants.items():
                res = compute_plan(tables, dataclasses.replace(PlanConfig(), epochs=8, ratio=r, seed=seed, device="cpu", **kw))
                eps = res.epochs
                sig = res.signals
                flagged = float(np.mean(sig.column("suspect").to_numpy(zero_copy_only=False))) if sig is not None else 0.0
                steps = sum(math.ceil(len(e)/128) for e in eps)
                acc = train_and_evaluate(task, eps, steps, seed)[0]["acc"]
                drawfl = float(np.mean(np.concatenate([fl[e] for e in eps]))) if fl is not None else None
                out.write(json.dumps(dict(regime=name, ratio=r, seed=seed, method=v, acc=acc, flagged=flagged, flipped_draw_share=drawfl)) + "\n"); out.flush()
            eps = list(weighted_rotation_epochs(np.where(keep_cl, 1.0, 1e-6), budget, 8, seed, n=n))
            acc = train_and_evaluate(task, eps, sum(math.ceil(len(e)/128) for e in eps), seed)[0]["acc"]
            drawfl = float(np.mean(np.concatenate([fl[e] for e in eps]))) if fl is not None else None
            out.write(json.dumps(dict(regime=name, ratio=r, seed=seed, method="cleanlab->rotation", acc=acc, flagged=float(1-keep_cl.mean()), flipped_draw_share=drawfl)) + "\n"); out.flush()
