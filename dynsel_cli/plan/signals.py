"""What the factors see that rotation cannot: near-duplicates and labels that look wrong.

Both come from one neighbour search in *factor space*: each sample is its SAE code (k active units with
their activations), and two samples are similar when they activate the same factors with similar
strength (the cosine of their codes). Near-duplicates share their dominant factors almost exactly; a
mislabelled sample's factor neighbours carry another label.

- **Candidates.** Codes are projected to 128 dimensions by a fixed Gaussian matrix (Johnson-Lindenstrauss;
  a sparse gather, O(N·k)), and faiss finds each sample's 24 nearest candidates by inner product: an
  exact search up to 200,000 samples, inverted lists (IVF, approximate) above, or as ``--neighbours``
  says (:mod:`.neighbour_index`). Their exact code cosines are then computed in float64 from the units
  themselves, so every decision below rests on exact numbers whatever faiss's thread count or the
  projection's error; the approximate search can only miss some true neighbours (find others instead).
- **Near-duplicate groups.** Samples joined by a code cosine ≥ ``dup_cosine`` (default 0.9) form one group
  (connected components). Group sizes are 1 on data without duplicates. With ``dup_rule="gap"`` a pair
  must also stand out from the row's own neighbours (:func:`copy_edges`), so paraphrase clouds stay apart.
- **Label trust** by default (``label_trust="probe-checked"``, and the other ``probe*`` rules) comes from a
  cross-validated probe of the codes instead (:mod:`.probe`, :func:`_probe_trust`): its suspects leave the
  rotation only where removing them helps a held-out probe. The next four items are the neighbour vote,
  ``label_trust="vote"``.
- **Label support.** For a labelled sample, the similarity-weighted share of its 10 nearest candidates
  outside its own group that carry its label, one vote per near-duplicate group (its nearest member), so
  an item copied many times does not outvote the rest; smoothed by the class prior:
  p_i(c) = (Σ_j w_ij [y_j = c] + prior_c) / (Σ_j w_ij + 1).
- **Separability** s ∈ [0, 1]: how far the leave-one-out neighbour vote beats always guessing the
  largest class, (acc − chance) / (1 − chance). It measures how much the labels can be trusted to
  judge labels: near 0 when the factors carry little label information, and then nothing is flagged
  as more than noise.
- **Suspects** (confident-learning style, Northcutt et al. 2021, with neighbour votes for model
  probabilities): p_i(y_i) is below its class's typical support t_y (the mean of p(y) over samples
  labelled y) *and* some other class c reaches its own typical support t_c.
- **Trust** of a suspect: 1 − g · (1 − min(1, p_i(y_i) / t_y)) with g = min(1, s / ``trust_full``): with the
  default ``trust_full`` = 1, g = s, so the hold-back grows in proportion to how well the factors predict
  labels; a smaller ``trust_full`` reaches full strength sooner. 1 for everyone else.

The exposure weight of a sample in dynsel's rotation is trust / group size: a group of near-duplicates
shares one sample's turn, and a suspect comes around less often the surer the factors are.

A signal that is off holds nothing per sample (:class:`Signals` keeps None and makes the trivial array
only when asked): with ``--no-dedup --no-trust`` there is no neighbour search and no per-sample array at
all, and the rotation runs with weight 1 for everyone. Group ids are held as uint32 and group sizes as
int32 (int64 beyond 2³¹ rows); the arrays a caller asks for are int64 as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import neighbour_index, streams

PROJECTION_DIM = 128
CANDIDATES = 24
VOTERS = 10
_CHUNK = 256
_PAIR_BUDGET = 1 << 24  # unit comparisons held at once in the exact-cosine step (16 MB of booleans)


@dataclass(frozen=True)
class Signals:
    """Per-sample signals, holding only what is not trivial: a signal that is off (or found nothing to
    say) is None, and the full arrays are made only when asked for (``group``, ``group_size``, ...)."""

    n: int
    groups: (
        np.ndarray | None
    )  # [N] near-duplicate group id (the group's smallest row), uint32 or int64; None: each row its own
    sizes: np.ndarray | None  # int32 or int64 [N] group sizes; None: all 1
    label_support: np.ndarray | None  # float64 [N]: p_i(y_i); None without labels
    suspects: np.ndarray | None  # bool [N]; None: nobody is suspected (trust off or no labels)
    trusts: np.ndarray | None  # float64 [N] in (0, 1]; None: all 1
    separability: float | None

    @property
    def group(self) -> np.ndarray:
        """int64 [N]: each row's group id."""
        return np.arange(self.n, dtype=np.int64) if self.groups is None else self.groups.astype(np.int64)

    @property
    def group_size(self) -> np.ndarray:
        """int64 [N]."""
        return np.ones(self.n, dtype=np.int64) if self.sizes is None else self.sizes.astype(np.int64)

    @property
    def suspect(self) -> np.ndarray:
        """bool [N]."""
        return np.zeros(self.n, dtype=bool) if self.suspects is None else self.suspects

    @property
    def trust(self) -> np.ndarray:
        """float64 [N]."""
        return np.ones(self.n, dtype=np.float64) if self.trusts is None else self.trusts

    @property
    def rotation_weights(self) -> np.ndarray | None:
        """Exposure weight π_i = trust_i / group_size_i, float64 [N]; None when every weight is 1."""
        if self.sizes is None:
            return self.trusts
        return 1.0 / self.sizes if self.trusts is None else self.trusts / self.sizes

    @property
    def weights(self) -> np.ndarray:
        """Exposure weight π_i = trust_i / group_size_i, float64 [N]."""
        weights = self.rotation_weights
        return np.ones(self.n, dtype=np.float64) if weights is None else weights

    def summary(self) -> dict[str, float | int | None]:
        if self.groups is None:
            groups = {"near_duplicate_groups": 0, "rows_in_near_duplicate_groups": 0, "distinct_groups": self.n}
        else:
            members = np.bincount(self.groups, minlength=self.n)  # rows per group id (group ids are rows)
            groups = {
                "near_duplicate_groups": int(np.count_nonzero(members > 1)),
                "rows_in_near_duplicate_groups": int(np.count_nonzero(self.sizes > 1)),
                "distinct_groups": int(np.count_nonzero(members)),
            }
        return {
            **groups,
            "suspected_mislabels": 0 if self.suspects is None else int(np.count_nonzero(self.suspects)),
            "separability": None if self.separability is None else round(float(self.separability), 6),
        }


def _index_dtype(n: int) -> type:
    """The narrowest of uint32 / int64 that holds every row number and count up to ``n``."""
    return np.uint32 if n < 2**32 else np.int64


def _normalised(acts: np.ndarray) -> np.ndarray:
    a = np.maximum(np.asarray(acts, dtype=np.float64), 0.0)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def _projector(units: np.ndarray, a: np.ndarray, width: int) -> Callable[[int, int], np.ndarray]:
    """project(start, stop): rows start..stop as 128-d Gaussian projections of their codes, float32, unit length."""
    faiss = neighbour_index.load_faiss()

    rows_needed = max(width, int(units.max()) + 1, 1)
    projection = (
        np.random.default_rng([streams.PROJECTION]).standard_normal((rows_needed, PROJECTION_DIM)).astype(np.float32)
    )

    def project(start: int, stop: int) -> np.ndarray:
        projected = np.empty((stop - start, PROJECTION_DIM), dtype=np.float32)
        for lo in range(start, stop, 4096):
            hi = min(lo + 4096, stop)
            projected[lo - start : hi - start] = np.einsum(
                "nk,nkd->nd", a[lo:hi].astype(np.float32), projection[units[lo:hi]]
            )
        faiss.normalize_L2(projected)
        return projected

    return project


def code_neighbours(
    units: np.ndarray, acts: np.ndarray, width: int, candidates: int = CANDIDATES, neighbours: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest other rows in factor space: (rows int64 [N, K], exact code cosines float64 [N, K]),
    best first (ties → lower row). K = min(candidates, N − 1). ``neighbours`` chooses the candidate search
    (:func:`.neighbour_index.resolve`): exact, or inverted lists (approximate) for large N."""
    n, k = units.shape
    want = min(candidates, n - 1)
    if want <= 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float64)
    units = np.asarray(units, dtype=np.int64)
    a = _normalised(np.where(units >= 0, acts, 0.0))  # a negative unit id pads a code with fewer than k units
    units = np.maximum(units, 0)
    project = _projector(units, a, width)
    if neighbour_index.resolve(neighbours, n) == "exact":
        found = neighbour_index.exact_search(project(0, n), want + 1)
    else:
        found = neighbour_index.ivf_search(project, n, PROJECTION_DIM, want + 1)
    rows = np.arange(n)
    found = np.where(found < 0, rows[:, None], found)  # faiss pads with -1 when it finds fewer
    cosines = np.empty(found.shape, dtype=np.float64)
    chunk = max(1, min(_CHUNK, _PAIR_BUDGET // max(found.shape[1] * k * k, 1)))  # [chunk, K, k, k] booleans
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        mine_u, mine_a = units[start:stop], a[start:stop]
        their_u, their_a = units[found[start:stop]], a[found[start:stop]]
        same = mine_u[:, None, :, None] == their_u[:, :, None, :]
        cosines[start:stop] = np.einsum("cpij,ci,cpj->cp", same, mine_a, their_a)
    cosines[found == rows[:, None]] = -np.inf  # never one's own neighbour
    order = np.lexsort((found, -cosines), axis=1)
    found = np.take_along_axis(found, order, axis=1)[:, :want]
    cosines = np.take_along_axis(cosines, order, axis=1)[:, :want]
    return found.astype(np.int64), cosines


COPY_GAP = 1.1  # --dup-rule gap: ln 3, the next neighbour at least 3x farther (in 1 - cosine) than the last copy


def copy_edges(cosines: np.ndarray, dup_cosine: float, rule: str = "fixed") -> np.ndarray:
    """[N, K] mask of the candidate pairs that are near-duplicates, from each row's sorted code cosines.

    ``fixed``: every pair at cosine >= ``dup_cosine``. ``gap``: a pair must also stand out from the row's
    own neighbourhood. In log(1 - cosine), a row's copies sit before the widest jump of its sorted
    neighbour list, and only a jump of at least ``COPY_GAP`` counts: a cloud of paraphrases grows
    smoothly and forms no group, while k edited copies of one item sit far below the next other sample.
    A copy cluster larger than the candidate list shows no jump inside it; its rows count as copies of
    all their candidates when even the farthest candidate is ``COPY_GAP`` below the data's typical
    nearest-neighbour distance (the median over the rows without a jump).
    """
    close = cosines >= dup_cosine
    if rule == "fixed" or cosines.shape[1] == 0:
        return close
    n, k = cosines.shape
    log_distance = np.log(np.clip(1.0 - cosines, 1e-9, 2.0))  # -inf cosines (padding) clip to log 2
    if k == 1:
        return close
    jumps = np.diff(log_distance, axis=1)
    last_copy = jumps.argmax(axis=1)
    rows = np.arange(n)
    jumped = jumps[rows, last_copy] >= COPY_GAP
    edges = jumped[:, None] & (np.arange(k)[None, :] <= last_copy[:, None])
    typical = float(np.median(log_distance[~jumped, 0])) if (~jumped).any() else 0.0
    edges |= (log_distance[:, -1] <= typical - COPY_GAP)[:, None]
    return edges & close


def connected_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (a_e, b_e): each row's component id is its smallest row."""
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    while True:
        while True:  # pointer jumping: every row points at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        high, low = np.maximum(ra[differ], rb[differ]), np.minimum(ra[differ], rb[differ])
        np.minimum.at(parent, high, low)


def _first_of_group(groups: np.ndarray) -> np.ndarray:
    """[N, K] mask: the candidate is the nearest of its near-duplicate group in its row (one item, one vote)."""
    first = np.ones(groups.shape, dtype=bool)
    for start in range(0, len(groups), 8192):
        block = groups[start : start + 8192]
        same = block[:, :, None] == block[:, None, :]  # [b, K, K]: candidate p and candidate q share a group
        earlier = np.tril(np.ones((block.shape[1], block.shape[1]), dtype=bool), k=-1)  # [p, q]: q comes before p
        first[start : start + 8192] = ~(same & earlier[None, :, :]).any(axis=2)
    return first


def label_support(
    neighbours: np.ndarray, cosines: np.ndarray, group: np.ndarray, labels: np.ndarray, voters: int = VOTERS
) -> tuple[np.ndarray, np.ndarray]:
    """(p [N, C]: smoothed neighbour vote per class, voted-for mask [N, K] actually used)."""
    n = len(labels)
    classes = int(labels.max()) + 1
    prior = np.bincount(labels, minlength=classes) / n
    their_group = group[neighbours]
    usable = (their_group != group[:, None]) & np.isfinite(cosines) & _first_of_group(their_group)
    used = usable & (np.cumsum(usable, axis=1) <= voters)
    w = np.where(used, np.maximum(cosines, 0.0), 0.0)
    votes = np.zeros((n, classes), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(n), neighbours.shape[1]), labels[neighbours].ravel()), w.ravel())
    p = (votes + prior[None, :]) / (w.sum(axis=1, keepdims=True) + 1.0)
    return p, used


def compute_signals(
    units: np.ndarray | None,
    acts: np.ndarray | None,
    width: int,
    labels: np.ndarray | None,
    *,
    n: int | None = None,
    dedup: bool = True,
    trust: bool = True,
    dup_cosine: float = 0.9,
    trust_full: float = 1.0,
    neighbours: str = "auto",
    label_trust: str = "vote",
    dup_rule: str = "fixed",
) -> Signals:
    """Near-duplicate groups and label trust of every row (see the module docstring).

    The codes (``units``, ``acts``) are needed only for the neighbour search (``dedup``, or ``trust`` with
    labels); without them give the number of rows ``n``. ``neighbours``: the candidate search, see
    :func:`code_neighbours`.
    """
    n = len(units) if units is not None else int(n or 0)
    groups = sizes = support = suspects = trusts = None
    separability = None
    if n > 1 and (dedup or (trust and labels is not None)):
        if units is None or acts is None:
            raise ValueError("the neighbour signals need the codes (units and acts)")
        found, cosines = code_neighbours(units, acts, width, neighbours=neighbours)
        group = np.arange(n, dtype=np.int64)
        if dedup:
            close = copy_edges(cosines, dup_cosine, dup_rule)
            group = connected_groups(n, np.repeat(np.arange(n), found.shape[1])[close.ravel()], found[close])
            sizes = np.bincount(group, minlength=n)[group].astype(np.int32 if n < 2**31 else np.int64)
        if trust and labels is not None and label_trust.startswith("probe"):
            support, suspects, trusts, separability = _probe_trust(units, acts, width, labels, label_trust)
        elif trust and labels is not None:
            support, suspects, trusts, separability = _label_trust(found, cosines, group, labels, trust_full)
        if dedup:
            groups = group.astype(_index_dtype(n))
    return Signals(
        n=n,
        groups=groups,
        sizes=sizes,
        label_support=support,
        suspects=suspects,
        trusts=trusts,
        separability=separability,
    )


def _label_trust(
    found: np.ndarray, cosines: np.ndarray, group: np.ndarray, labels: np.ndarray, trust_full: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(label support p_i(y_i), suspects, trust, separability) from the neighbour vote."""
    n = len(labels)
    labels = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)[1].astype(np.int64)  # 0..C-1
    p, _ = label_support(found, cosines, group, labels)
    rows = np.arange(n)
    support = p[rows, labels]
    prior = np.bincount(labels, minlength=p.shape[1]) / n
    accuracy = float(np.mean(p.argmax(axis=1) == labels))
    chance = float(prior.max())
    separability = float(np.clip((accuracy - chance) / (1.0 - chance), 0.0, 1.0)) if chance < 1.0 else 0.0
    typical = np.array([p[labels == c, c].mean() if np.any(labels == c) else 1.0 for c in range(p.shape[1])])
    others = p >= typical[None, :]
    others[rows, labels] = False
    suspect = (support < typical[labels]) & others.any(axis=1)
    relative = np.minimum(1.0, support / typical[labels])
    gate = min(1.0, separability / trust_full)
    trust_values = np.maximum(np.where(suspect, 1.0 - gate * (1.0 - relative), 1.0), 1e-3)
    return support, suspect, trust_values, separability


SUSPECT_WEIGHT = 1e-6  # --label-trust probe: a confident suspect's trust; it comes around only to fill a budget


def _probe_trust(
    units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray, mode: str = "probe"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(label probability, suspects, trust, separability) from the code probe (``mode``: a --label-trust value).

    probe: confident learning's suspects; probe-heldout: the lowest-odds rows up to the share whose
    removal helps held-out prediction most; probe-checked: nobody unless confident learning's suspects
    pass the filter check (probes trained without them predict held-out labels at least as well), then
    whichever of those suspects and the held-out cut helps more (see :mod:`.probe`). A suspect's trust is ``SUSPECT_WEIGHT``
    (it leaves the rotation), or with probe-odds the odds of its given label against the probe's best
    class, p_i(y_i) / max_c p_i(c): a label the probe finds nearly as likely as its own guess keeps nearly
    all its turns, one it finds 20 times less likely keeps 1/20.
    """
    from .probe import checked_removal, held_out_cut, label_trust

    labels = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)[1].astype(np.int64)
    if mode == "probe-heldout":
        verdict = held_out_cut(units, acts, width, labels)[0]
    elif mode == "probe-checked":
        verdict = checked_removal(units, acts, width, labels)
    else:
        verdict = label_trust(units, acts, width, labels)
    if mode == "probe-odds":
        odds = verdict.label_probability.astype(np.float64) / np.maximum(
            verdict.best_probability.astype(np.float64), 1e-12
        )
        trust_values = np.where(verdict.suspects, np.clip(odds, SUSPECT_WEIGHT, 1.0), 1.0)
    else:
        trust_values = np.where(verdict.suspects, SUSPECT_WEIGHT, 1.0)
    return verdict.label_probability.astype(np.float64), verdict.suspects, trust_values, verdict.separability
