"""Shared set-up of benchmarks/label_trust_sweep.py: one run's factor tables and features, a cross-validated
probe on either, and the two seeded label flips (30% uniform, 30% to the partner class)."""
import sys, numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.formats.features import read_features
torch.set_num_threads(1)
run = sys.argv[1]
t = read_factor_tables(f"{run}/factors"); f = read_features(f"{run}/features")
y0 = t.samples.labels.astype(np.int64); n = len(y0); C = y0.max() + 1
units = t.samples.units.astype(np.int64); acts = t.samples.acts.astype(np.float32); m = int(t.manifest.get("width", units.max()+1))
X = f.vectors.astype(np.float32); X = (X - X.mean(0)) / (X.std(0) + 1e-6)

def cv_probs(kind, y, folds=5, epochs=30, seed=0):
    rng = np.random.default_rng(seed); fold = rng.permutation(n) % folds
    P = np.zeros((n, C), np.float32)
    for k in range(folds):
        tr, te = fold != k, fold == k
        torch.manual_seed(k)
        if kind == "codes":
            a = acts / (np.linalg.norm(acts, axis=1, keepdims=True) + 1e-9)
            emb = torch.nn.EmbeddingBag(m, C, mode="sum"); b = torch.nn.Parameter(torch.zeros(C))
            params = list(emb.parameters()) + [b]
            U, A = torch.from_numpy(units), torch.from_numpy(a)
            fwd = lambda idx: emb(U[idx], per_sample_weights=A[idx]) + b
        else:
            lin = torch.nn.Linear(X.shape[1], C); params = list(lin.parameters()); Xt = torch.from_numpy(X)
            fwd = lambda idx: lin(Xt[idx])
        opt = torch.optim.Adam(params, lr=0.01 if kind != "codes" else 0.05, weight_decay=0)
        yt = torch.from_numpy(y); idx_tr = np.flatnonzero(tr)
        for e in range(epochs):
            perm = torch.from_numpy(rng.permutation(idx_tr))
            for s in range(0, len(perm), 256):
                bi = perm[s:s+256]; loss = torch.nn.functional.cross_entropy(fwd(bi), yt[bi]) 
                l2 = sum((p**2).sum() for p in params[:1]) * 1e-5
                opt.zero_grad(); (loss + l2).backward(); opt.step()
        with torch.no_grad():
            te_i = torch.from_numpy(np.flatnonzero(te)); P[te] = torch.softmax(fwd(te_i), 1).numpy()
    return P

rng = np.random.default_rng(1)
rows = rng.choice(n, round(0.3*n), replace=False); y_uni = y0.copy(); y_uni[rows] = (y0[rows] + rng.integers(1, C, len(rows))) % C
fl_uni = np.zeros(n, bool); fl_uni[rows] = True
# class-conditional: flip 30% of each class to one confusable class (c -> next by confusion of a probe). use (c+1)%C simple
rows2 = rng.choice(n, round(0.3*n), replace=False); y_cc = y0.copy(); y_cc[rows2] = (y0[rows2] + 1) % C
fl_cc = np.zeros(n, bool); fl_cc[rows2] = True
