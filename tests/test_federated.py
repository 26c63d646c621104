"""flipguard.federated: label-flipping clients and defences on Flower's real simulation engine.

Three simulations in total (digits): one through the CLI with every defence
(10 clients, 5 rounds), one through the Python API, which must reproduce the
CLI's numbers exactly (same seed, fresh Ray instance, new random node ids),
and a small one (5 non-iid clients, 2 rounds, FedAvg) for the default
targeted attack.  Everything else (the strategies fed hand-made replies, the
attackers' flips, the settings refused before Ray starts) runs in-process.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

import flipguard.cli._federated  # noqa: F401  (registers the command group)
from flipguard.cli import main
from flipguard.federated import (
    FLTrust,
    LFighter,
    NumpyModel,
    TolpeginPCA,
    dirichlet_partition,
    iid_partition,
    simulate,
)

DEFENCES = "fedavg,krum,median,trimmed_mean,lfighter,tolpegin,fltrust"
SETTINGS = dict(clients=10, malicious=0.4, source="3", target="8", rounds=5, seed=0, attack_from=2)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory, digits):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    X, y = digits
    path = tmp_path_factory.mktemp("fl") / "digits.csv"
    cols = {f"px{j}": X[:, j] for j in range(X.shape[1])}
    cols["digit"] = y
    pacsv.write_csv(pa.table(cols), path)
    return path


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def cli_run(digits_csv, tmp_path_factory):
    """One real simulation through the CLI: baseline + 7 defences, 10 clients, 5 rounds."""
    report = tmp_path_factory.mktemp("flr") / "fl.html"
    s = SETTINGS
    args = ["federated", "simulate", str(digits_csv), "--label", "digit", "--clients", str(s["clients"]),
            "--malicious", str(s["malicious"]), "--attack", "targeted", "--source", s["source"],
            "--target", s["target"], "--rounds", str(s["rounds"]), "--defence", DEFENCES,
            "--attack-from", str(s["attack_from"]), "--seed", str(s["seed"]), "--json", "--report", str(report),
            "--attacker-pool", "any"]  # on iid data every client holds the source class: same attackers
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    return json.loads(buf.getvalue()), report


def records(doc):
    return {r["defence"]: r for r in doc["runs"]}


# -- the simulation ------------------------------------------------------------------
def test_json_has_a_record_per_run_with_the_issue_fields(cli_run):
    doc, _ = cli_run
    recs = records(doc)
    assert list(recs) == ["baseline"] + DEFENCES.split(",")
    for name, r in recs.items():
        for key in ("defence", "malicious", "accuracy", "source_recall", "attack_success_rate",
                    "detection_precision", "detection_recall", "per_round"):
            assert key in r, (name, key)
        assert len(r["per_round"]["source_recall"]) == SETTINGS["rounds"]
    assert recs["baseline"]["malicious"] == 0 and recs["fedavg"]["malicious"] == 0.4
    assert recs["baseline"]["detection_precision"] is None  # FedAvg names nobody
    assert recs["krum"]["detection_recall"] is None
    assert len(doc["settings"]["malicious_clients"]) == 4
    assert doc["settings"]["source"] == "3" and doc["settings"]["target"] == "8"
    assert doc["settings"]["attacker_pool"] == "any"


def test_attack_bites_fedavg_loses_source_recall(cli_run):
    """Tolpegin et al.: 40 % of clients flipping 3 -> 8 cut the global model's recall of class 3."""
    recs = records(cli_run[0])
    base, fedavg = recs["baseline"], recs["fedavg"]
    assert base["source_recall"] > 0.85
    assert fedavg["source_recall"] <= base["source_recall"] - 0.10
    assert fedavg["attack_success_rate"] >= base["attack_success_rate"] + 0.10


def test_lfighter_finds_the_malicious_clients_on_iid_data(cli_run):
    """Jebreel et al.: the source/target output rows separate attackers from honest clients."""
    doc = cli_run[0]
    lf = records(doc)["lfighter"]
    assert lf["suspects"] == doc["settings"]["malicious_clients"]
    assert lf["detection_precision"] == 1.0 and lf["detection_recall"] == 1.0
    assert all(p == 1.0 for p in lf["per_round"]["detection_precision"][1:])  # attackers start in round 2
    # it averages exactly the 6 honest clients; after 5 rounds that model may miss up to 2 of the 37 test
    # rows of class 3 the 10-client baseline gets (the benchmark's 20 rounds and seeds are in the docs)
    base = records(doc)["baseline"]
    assert lf["source_recall"] >= base["source_recall"] - 2 / 37 - 1e-9
    assert lf["attack_success_rate"] <= base["attack_success_rate"] + 2 / 37 + 1e-9


def test_attackers_start_at_attack_from(cli_run):
    """Before --attack-from nobody flips: FedAvg's first round is the baseline's, to the last digit."""
    recs = records(cli_run[0])
    base, fedavg = recs["baseline"]["per_round"], recs["fedavg"]["per_round"]
    assert fedavg["malicious"][0] == [] and fedavg["malicious"][1] == cli_run[0]["settings"]["malicious_clients"]
    for key in ("accuracy", "source_recall", "attack_success_rate"):
        assert fedavg[key][0] == base[key][0], key
    assert fedavg["source_recall"][-1] < base["source_recall"][-1]


def test_label_flip_aware_defences_beat_fedavg(cli_run):
    recs = records(cli_run[0])
    for name in ("lfighter", "tolpegin"):
        assert recs[name]["source_recall"] > recs["fedavg"]["source_recall"], name
        assert recs[name]["detection_recall"] is not None


def test_api_reproduces_the_cli_exactly(cli_run, digits):
    """Same seed, a fresh Ray instance and new random Flower node ids: the same numbers, round by round."""
    from flipguard.attacks import TargetedFlip

    X, y = digits
    s = SETTINGS
    res = simulate(X, y, attack=TargetedFlip(source=3, target=8, rate=1.0, random_state=0),
                   n_clients=s["clients"], malicious=[0.2, s["malicious"]], rounds=s["rounds"],
                   defences=["lfighter"], attack_from=s["attack_from"], random_state=s["seed"])
    recs = records(cli_run[0])
    for mine in (res.baseline, res.run("lfighter", s["malicious"])):
        theirs = recs[mine.defence]
        assert mine.to_dict()["per_round"] == theirs["per_round"], mine.defence
    assert res.settings["malicious_clients"] == cli_run[0]["settings"]["malicious_clients"]
    # several fractions run against the same clients with nested attacker sets
    fewer = res.run("lfighter", 0.2).final.malicious
    assert len(fewer) == 2 and set(fewer) < set(res.settings["malicious_clients"])


@pytest.mark.browser
def test_report_renders_in_headless_chromium(cli_run, chromium, tmp_path):
    from matplotlib.image import imread

    _, report = cli_run
    html = report.read_text()
    assert "Source-class recall" in html and "data:image/png;base64," in html and "http://" not in html
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600", f"--screenshot={shot}",
           report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = (imread(shot)[..., :3].reshape(-1, 3) * 255).round().astype(np.uint8)
    assert len(np.unique(pixels[::7], axis=0)) > 100
    assert 0.05 < float(np.mean(np.any(pixels < 245, axis=1))) < 0.95


# -- CLI input errors (no simulation starts) --------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--defence", "fedavg,nope"], "Error: --defence nope is not a defence"),
    (["--malicious", "0.6"], "Error: --malicious must be a fraction in [0, 0.5); got 0.6"),
    (["--attack", "random"], "Error: --attack random needs --rate"),
    (["--clients", "2"], "Error: --clients must be at least 3; got 2"),
    (["--source", "42", "--target", "8"], "Error: --source '42' is not a class of the label column"),
    (["--partition", "shards"], "Error: --partition must be iid or dirichlet; got 'shards'"),
    (["--attacker-pool", "rich"], "Error: --attacker-pool must be source or any; got 'rich'"),
])
def test_cli_rejects_bad_input_with_one_line(digits_csv, capsys, extra, message):
    code, out, err = run_cli(["federated", "simulate", str(digits_csv), "--label", "digit", *extra], capsys)
    assert code == 2
    assert err.startswith(message), err
    assert err.count("\n") == 1 and out == ""


# -- pieces, without the engine -----------------------------------------------------------
def test_iid_partition_is_a_seeded_split_of_every_row():
    parts = iid_partition(103, 10, random_state=1)
    allrows = np.concatenate(parts)
    assert sorted(allrows) == list(range(103)) and {len(p) for p in parts} == {10, 11}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(103, 10, random_state=1)))


def test_dirichlet_partition_skews_classes_more_for_small_alpha():
    y = np.repeat(np.arange(10), 100)

    def skew(alpha):
        parts = dirichlet_partition(y, 10, alpha, random_state=0)
        assert sorted(np.concatenate(parts)) == list(range(1000))
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.1) > 0.5 > skew(100.0)
    assert skew(100.0) < 0.25


def test_numpy_model_learns_and_is_deterministic(digits):
    X, y = digits
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    for kind in ("logreg", "mlp"):
        m = NumpyModel(kind=kind, n_features=64, n_classes=10)
        p = m.fit(m.init(0), X[:1200], y[:1200], random_state=3)
        q = m.fit(m.init(0), X[:1200], y[:1200], random_state=3)
        assert all(np.array_equal(p[k], q[k]) for k in p)
        assert np.mean(m.predict(p, X[1200:]) == y[1200:]) > 0.85


def _updates(n_honest=6, n_bad=4, k=10, d=8, seed=0):
    """Synthetic output-layer updates: attackers push class 3's row down and class 8's up."""
    rng = np.random.RandomState(seed)
    ups = []
    for i in range(n_honest + n_bad):
        W = rng.normal(0, 0.05, size=(k, d))
        if i >= n_honest:
            W[3] -= 1.0
            W[8] += 1.0
        else:
            W[3] += 0.3
        ups.append({"W": W, "b": rng.normal(0, 0.01, size=k)})
    return ups


def test_lfighter_and_tolpegin_flag_the_flipping_clients_from_their_updates():
    ups = _updates()
    truth = np.array([False] * 6 + [True] * 4)
    for strategy in (LFighter(random_state=0), TolpeginPCA(random_state=0), TolpeginPCA(source_class=3)):
        flagged, _ = strategy._suspect(1, ups, np.ones(10))
        assert np.array_equal(flagged, truth), type(strategy).__name__


def test_lfighter_cluster_score_is_the_papers_share_times_dissimilarity():
    """Jebreel et al.'s score: |C|/m * (1 - mean_i min_j (cos_ij - [i = j])), as in their aggregation.py."""
    from flipguard.federated._strategies import _lfighter_score

    same_way = np.array([[1.0, 0.0], [2.0, 0.1], [0.5, 0.05]])  # all cosines > 0: the minimum is the own 0
    assert _lfighter_score(same_way, 10) == pytest.approx(0.3)
    opposed = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # cos(a, b) = -1, the third at 90 degrees
    assert _lfighter_score(opposed, 10) == pytest.approx(0.3 * (1 + (1 + 1 + 0) / 3))
    assert _lfighter_score(np.array([[3.0, 4.0]]), 10) == pytest.approx(0.1)  # a lone client: its share


def test_lfighter_keeps_a_dense_honest_majority_on_two_class_data():
    """Two classes, iid: honest updates almost identical, the attackers' spread by how much each flipped.

    The paper's rule keeps the majority here (it scores exactly its share); the minimum taken over the
    *other* members only (flipguard's earlier reading) scored the dense majority near 0 and dropped it.
    """
    rng = np.random.RandomState(1)
    honest = [np.array([[1.0, 0.5, 0.2], [-1.0, -0.5, -0.2]]) + rng.normal(0, 1e-3, (2, 3)) for _ in range(6)]
    bad = [np.array([[-a, 0.5 * b, 0.3], [a, -0.5 * b, -0.3]]) for a, b in ((0.8, 1.0), (1.5, -0.5), (1.1, 2.0),
                                                                                (2.5, 0.1))]
    ups = [{"W": W, "b": np.zeros(2)} for W in honest + bad]
    strategy = LFighter(random_state=0)
    flagged, _ = strategy._suspect(1, ups, np.ones(10))
    assert np.array_equal(flagged, [False] * 6 + [True] * 4)
    kept, dropped = strategy.cluster_scores_[1]
    assert kept == pytest.approx(0.6) and dropped == pytest.approx(0.4)  # both clusters are one-directional


def test_lfighter_keeps_the_more_dissimilar_smaller_cluster_as_the_paper_does():
    """The paper's rule is not "keep the larger cluster": 4 disagreeing clients outscore 6 aligned ones."""
    rng = np.random.RandomState(2)
    aligned = [np.array([[1.0, 1.0], [-1.0, -1.0]]) * 3 + rng.normal(0, 1e-3, (2, 2)) for _ in range(6)]
    spread = [np.array([[c, s], [-c, -s]]) for c, s in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    ups = [{"W": W, "b": np.zeros(2)} for W in aligned + spread]
    flagged, _ = LFighter(random_state=0)._suspect(1, ups, np.ones(10))
    assert np.array_equal(flagged, [True] * 6 + [False] * 4)  # 0.4 * (1 + 1) = 0.8 > 0.6


@pytest.mark.parametrize("loader, source, target", [("load_digits", 3, 8), ("load_breast_cancer", 0, 1)])
def test_lfighter_drops_exactly_the_attackers_with_real_client_updates(loader, source, target):
    """The paper's claim: with 40 % of iid clients flipping source -> target, the attackers are the cluster dropped.

    Real local updates of flipguard's client model (10 iid clients, 4 flip every source row from the first
    round on), 5 rounds in which the server averages the clients LFighter keeps; on breast cancer (two output
    neurons) the whole layer is clustered.  The earlier reading of the score dropped the honest majority in
    the first breast-cancer round.
    """
    import sklearn.datasets

    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    parts = iid_partition(len(y), 10, random_state=0)
    net = NumpyModel(n_features=X.shape[1], n_classes=len(np.unique(y)))
    bad = np.zeros(10, dtype=bool)
    bad[[1, 4, 6, 9]] = True
    strategy = LFighter(random_state=0)
    g = net.init(0)
    for rnd in range(1, 6):
        locals_ = [net.fit(g, X[p], np.where(bad[i] & (y[p] == source), target, y[p]), random_state=10 * rnd + i)
                   for i, p in enumerate(parts)]
        flagged, _ = strategy._suspect(rnd, [{k: m[k] - g[k] for k in g} for m in locals_], np.ones(10))
        assert np.array_equal(flagged, bad), rnd
        g = {k: np.mean([m[k] for m, f in zip(locals_, flagged) if not f], axis=0) for k in g}


def test_fltrust_gives_zero_trust_to_updates_against_the_root_update():
    ups = _updates()
    glob = {"W": np.zeros((10, 8)), "b": np.zeros(10)}

    def root(params, rnd):
        out = {k: v.copy() for k, v in params.items()}
        out["W"][3] += 0.3
        return out

    s = FLTrust(root_update_fn=root)
    s._global = glob
    flagged, scores = s._suspect(1, ups, np.ones(10))
    assert flagged[6:].all() and not flagged[:6].any()
    assert np.all(scores[:6] < 1.0)


# -- attackers and their flips (no engine) -----------------------------------------------------
def test_an_attacker_without_the_target_class_still_flips_every_source_row():
    """Tolpegin et al.'s attacker relabels all its source rows; on non-iid data it may hold no target row.

    A flipguard flipper only knows the classes it is shown, so the simulation shows it every class of the
    federation: a client holding only class-0 rows (breast cancer's malignant, Dirichlet split) flipped
    nothing before, and now flips all of them to class 1.
    """
    from flipguard.attacks import TargetedFlip
    from flipguard.federated._simulate import flip_client

    classes = np.array(["benign", "malignant"])  # sorted; codes index them
    attack = TargetedFlip(source="malignant", target="benign", rate=1.0)
    only_source = np.full(10, 1)  # every row malignant
    new = flip_client(attack, np.zeros((10, 3)), only_source, classes, seed=0)
    assert new.tolist() == [0] * 10
    mixed = np.array([1, 0, 1, 0, 1])
    assert flip_client(attack, np.ones((5, 3)), mixed, classes, seed=0).tolist() == [0] * 5
    three = np.array([0, 1, 2])
    no_source = np.array([1, 1, 2, 2])  # nothing of the source class: nothing flipped
    assert flip_client(TargetedFlip(source=0, target=1, rate=1.0), np.ones((4, 2)), no_source, three,
                       seed=0).tolist() == no_source.tolist()


def test_attackers_that_need_features_get_the_clients_features():
    """Flippers that cluster or fit a surrogate on X (ClusterFlip, ...) need the client's rows, not None."""
    from flipguard.attacks import ClusterFlip
    from flipguard.federated._simulate import flip_client

    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(-2, 1, (20, 2)), rng.normal(2, 1, (20, 2))])
    codes = np.repeat([0, 1], 20)
    new = flip_client(ClusterFlip(n_clusters=2, rate=0.25), X, codes, np.array([0, 1, 2]), seed=1)
    assert len(new) == 40 and 0 < np.sum(new != codes) <= 12
    assert set(np.unique(new)) <= {0, 1, 2}


def test_attackers_are_drawn_among_the_clients_holding_the_source_class():
    """As in Jebreel et al.'s experiments: a random draw among the clients that can flip something, nested."""
    from flipguard.federated._simulate import attacker_ranks

    order = np.array([3, 0, 7, 1, 9, 2, 5, 8, 4, 6])
    plain = attacker_ranks(order)
    assert [int(np.flatnonzero(plain == r)[0]) for r in range(10)] == order.tolist()
    holds = np.array([True, False, True, False, True, True, True, False, True, True])  # 0, 2, 4, 5, 6, 8, 9
    rank = attacker_ranks(order, holds)
    by_rank = [int(np.flatnonzero(rank == r)[0]) for r in range(10)]
    assert by_rank == [0, 9, 2, 5, 8, 4, 6, 3, 7, 1]  # holders in draw order, then the others
    for k in (1, 2, 4, 7):
        assert all(holds[by_rank[:k]])  # every attacker holds source rows while enough clients do
    assert set(by_rank[:2]) < set(by_rank[:4])
    assert np.array_equal(attacker_ranks(order, np.ones(10, dtype=bool)), plain)  # iid: the same attackers


def test_simulate_rejects_an_unknown_attacker_pool(digits):
    X, y = digits
    with pytest.raises(Exception, match="attacker_pool must be 'source' or 'any'"):
        simulate(X, y, attack=None, malicious=0.0, attacker_pool="rich")


# -- strategies fed hand-made replies (no engine) ----------------------------------------------
class _Reply:
    """What a strategy reads of a Flower reply: the sender's node id and the content."""

    def __init__(self, node, content):
        from types import SimpleNamespace

        self.metadata = SimpleNamespace(src_node_id=node)
        self.content = content

    def has_error(self):
        return False


def _aggregate(strategy, glob, locals_, rnd=1, n_examples=None):
    """One ``aggregate_train`` round on replies from nodes 101, 102, ... with the arrays ``locals_``."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    strategy._global = {k: np.asarray(v) for k, v in glob.items()}  # what configure_train keeps
    replies = [_Reply(101 + i, RecordDict({
        "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in loc.items()}),
        "metrics": MetricRecord({"num-examples": (n_examples or [10] * len(locals_))[i]})}))
        for i, loc in enumerate(locals_)]
    arrays, metrics = strategy.aggregate_train(rnd, replies)
    return None if arrays is None else {k: v.numpy() for k, v in arrays.items()}, metrics


K, D = 10, 8
GLOB = {"W": np.zeros((K, D)), "b": np.zeros(K)}


def _honest(n=6, seed=0):
    rng = np.random.RandomState(seed)
    return [{"W": 0.1 * rng.randn(K, D) + 0.5, "b": 0.01 * rng.randn(K)} for _ in range(n)]


def _root_fn(arrays, rnd):
    return {"W": arrays["W"] + 0.5, "b": arrays["b"]}


def _strategies():
    return [LFighter(random_state=0), TolpeginPCA(random_state=0), FLTrust(root_update_fn=_root_fn)]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_update_is_refused_by_every_defence_and_never_aggregated(bad):
    """One client sending NaN or infinity: LFighter's k-means raised, Tolpegin's SVD raised, FLTrust averaged NaN."""
    for strategy in _strategies():
        clients = _honest()
        clients[0]["W"][0, 0] = bad
        arrays, metrics = _aggregate(strategy, GLOB, clients)
        name = type(strategy).__name__
        assert 101 in strategy.suspects_[1], name
        assert "NaN or infinity" in strategy.refused_[1][101], name
        assert strategy.scores_[1][101] == 1.0, name
        assert arrays is not None and all(np.isfinite(v).all() for v in arrays.values()), name
        assert metrics["flipguard-suspects"] == len(strategy.suspects_[1])


def test_a_huge_finite_update_breaks_no_defence():
    """1e300 is a finite reply: its squares overflow; norms, k-means and PCA must still work and stay finite."""
    for strategy in _strategies():
        clients = _honest()
        clients[0]["W"] = np.full((K, D), 1e300)
        arrays, _ = _aggregate(strategy, GLOB, clients)
        name = type(strategy).__name__
        assert arrays is not None and all(np.isfinite(v).all() for v in arrays.values()), name
        if isinstance(strategy, FLTrust):  # it points the server's way: trusted, but rescaled to the server's norm
            step = np.concatenate([arrays[k].ravel() - GLOB[k].ravel() for k in GLOB])
            assert np.linalg.norm(step) <= np.linalg.norm(np.full(K * D, 0.5)) + 1e-9
        else:
            assert 101 in strategy.suspects_[1], name


@pytest.mark.parametrize("bad, why", [
    ({"W": np.full((1, 1), 100.0), "b": np.zeros(K)}, "array 'W' has shape (1, 1), the global model's has (10, 8)"),
    ({"W": np.zeros((K, D)), "b": np.zeros(K), "extra": np.ones(3)}, "unexpected 'extra'"),
    ({"W": np.zeros((K, D))}, "missing 'b'"),
    ({"W": np.zeros((D, K)), "b": np.zeros(K)}, "array 'W' has shape (8, 10)"),
])
def test_an_update_that_does_not_match_the_global_model_is_refused_with_its_reason(bad, why):
    """A (1, 1) 'W' was broadcast into the model and FLTrust gave it the highest trust; other keys stopped the round."""
    for strategy in _strategies():
        arrays, _ = _aggregate(strategy, GLOB, [bad] + _honest()[1:])
        name = type(strategy).__name__
        assert 101 in strategy.suspects_[1] and why in strategy.refused_[1][101], name
        assert arrays["W"].shape == (K, D) and set(arrays) == {"W", "b"}, name
    assert strategy.trust_[1][101] == 0.0  # FLTrust, the last one


def test_fltrust_reports_the_trust_of_every_client_every_round():
    """``trust_`` was documented (round -> node -> trust) but stayed empty."""
    s = FLTrust(root_update_fn=_root_fn)
    clients = _honest(5) + [{"W": -np.ones((K, D)), "b": np.zeros(K)}]  # against the server's update
    _aggregate(s, GLOB, clients)
    _aggregate(s, GLOB, clients, rnd=2)
    assert sorted(s.trust_) == [1, 2] and sorted(s.trust_[1]) == list(range(101, 107))
    assert s.trust_[1][106] == 0.0 and all(s.trust_[1][n] > 0.9 for n in range(101, 106))
    for n, t in s.trust_[1].items():
        assert t == pytest.approx(1.0 - s.scores_[1][n])


def test_fltrust_refuses_a_zero_server_update_instead_of_distrusting_everyone():
    """An empty root set gives the server update 0: every client got trust 0 and the model never moved."""
    from flipguard.exceptions import InvalidParameterError

    s = FLTrust(root_update_fn=lambda arrays, rnd: arrays)  # the global model back, unchanged
    with pytest.raises(InvalidParameterError, match="server's update on its root set is zero in round 1"):
        _aggregate(s, GLOB, _honest())


def test_every_round_has_an_entry_in_every_per_round_attribute_and_the_docs_loop_runs(capsys):
    """The docs' deployment loop read ``cluster_scores_[rnd]`` for every round in ``suspects_``: a KeyError for a
    round with fewer than three replies or a single k-means cluster."""
    import re
    import textwrap
    from pathlib import Path

    s = LFighter(random_state=0)
    _aggregate(s, GLOB, _honest(2), rnd=1)  # two replies: nothing is clustered
    same = _honest(1)[0]
    _aggregate(s, GLOB, [same] * 5, rnd=2)  # identical replies: one cluster
    ups = _updates()
    _aggregate(s, GLOB, [{k: GLOB[k] + u[k] for k in GLOB} for u in ups], rnd=3)
    _aggregate(s, GLOB, [], rnd=4)  # no replies at all
    assert sorted(s.suspects_) == sorted(s.scores_) == sorted(s.refused_) == sorted(s.cluster_scores_) == [1, 2, 3, 4]
    assert s.cluster_scores_[1] is None and s.cluster_scores_[2] is None and s.cluster_scores_[4] is None
    assert s.suspects_[3] == [107, 108, 109, 110] and s.cluster_scores_[3] is not None
    doc = (Path(__file__).parents[1] / "docs" / "federated.md").read_text()
    loop = re.search(r"\n( *for rnd, nodes in strategy\.suspects_\.items\(\):.*\n(?: {8,}.*\n)+)", doc).group(1)
    exec(textwrap.dedent(loop), {"strategy": s})  # noqa: S102  (the docs' own code)
    assert len(capsys.readouterr().out.splitlines()) == 4


# -- settings refused before the engine starts ----------------------------------------------------
class _EngineStarted(Exception):
    pass


@pytest.fixture
def no_engine(monkeypatch):
    """Ray must not start: a setting that should have been refused first fails the test loudly."""
    import flipguard.federated._simulate as sim

    def boom(*args, **kwargs):
        raise _EngineStarted("the simulation engine started")

    monkeypatch.setattr(sim, "_init_ray", boom)


@pytest.mark.parametrize("extra, message", [
    (["--malicious", "0.04"], "Error: --malicious 0.04 gives 0 of 10 clients; with --clients 10 it can be 0 "
                              "(nobody attacks) or k/10 for k = 1..4 (0.1, 0.2, 0.3, 0.4)"),
    (["--malicious", "0.49"], "Error: --malicious 0.49 gives 5 of 10 clients"),
    (["--malicious", "0.45", "--clients", "4"], "Error: --malicious 0.45 gives 2 of 4 clients; with --clients 4 it "
                                                "can be 0 (nobody attacks) or 1/4 (0.25)"),
    (["--malicious", "0.4,0.41"], "Error: --malicious 0.4,0.41 give the same number of attackers twice"),
    (["--defence", "bulyan", "--malicious", "0.2"], "Error: defence bulyan needs --clients >= 4 x attackers + 3 "
                                                    "(11 for 2 attacker(s)); got 10"),
    (["--defence", "krum", "--clients", "3", "--malicious", "0.3"], "Error: defence krum needs --clients >= "
                                                                    "attackers + 3"),
    (["--epochs", "0"], "Error: --epochs must be a whole number, at least 1"),
    (["--epochs", "-2"], "Error: --epochs must be a whole number, at least 1"),
    (["--attack-from", "6", "--rounds", "5"], "Error: --attack-from 6 is after the last round (--rounds 5)"),
    (["--report", "/proc/fl.html"], "Error: --report /proc/fl.html: cannot create files in /proc"),
])
def test_cli_refuses_before_the_simulation_starts(digits_csv, capsys, no_engine, extra, message):
    code, out, err = run_cli(["federated", "simulate", str(digits_csv), "--label", "digit", "--source", "3",
                              "--target", "8", *extra], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1, err


def test_cli_refuses_fltrust_without_a_root_set_saying_how_many_rows_it_needs(tmp_path, capsys, no_engine, digits):
    """10 classes x 5 rows: the root set was empty, FLTrust named every client and never trained (precision 0.25)."""
    from flipguard.federated._simulate import split_rows

    X, y = digits
    rows = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(10)])
    path = tmp_path / "tiny.csv"
    path.write_text("a,b,digit\n" + "".join(f"{X[i, 20]},{X[i, 30]},{y[i]}\n" for i in rows))
    code, out, err = run_cli(["federated", "simulate", str(path), "--label", "digit", "--clients", "4",
                              "--malicious", "0.25", "--defence", "fedavg,fltrust"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("Error: defence fltrust needs a root set of at least one row per class (10 classes)")
    assert "the data has 50 rows and needs at least 63" in err
    for n in (62, 63):  # the count said is the least that gives a root set
        codes = np.resize(np.arange(10), n)
        assert (len(split_rows(codes, random_state=0)[2]) >= 10) == (n >= 63)


def test_simulate_checks_its_python_settings_before_the_engine_starts(digits, no_engine):
    """batch_size=0 crashed a client inside Ray (190 lines of traceback); a string of defences read 'l', 'f', ..."""
    from flipguard.attacks import TargetedFlip
    from flipguard.exceptions import InvalidParameterError

    X, y = digits
    kw = dict(attack=TargetedFlip(source=3, target=8, rate=1.0), n_clients=5, malicious=0.2, rounds=1,
              defences=["fedavg"])
    for bad, message in [(dict(batch_size=0), "batch_size must be a whole number, at least 1; got 0"),
                         (dict(lr=0.0), "lr must be a positive number"),
                         (dict(lr=float("nan")), "lr must be a positive number"),
                         (dict(epochs=0), "--epochs must be a whole number"),
                         (dict(n_clients=2.5), "--clients must be a whole number"),
                         (dict(attack_from=3), "--attack-from 3 is after the last round"),
                         (dict(defences="lfighter,nope"), "nope")]:
        with pytest.raises(InvalidParameterError, match=re.escape(message)):
            simulate(X, y, **{**kw, **bad})
    with pytest.raises(_EngineStarted):  # one name as a string is a list of one: the settings pass
        simulate(X, y, **{**kw, "defences": "lfighter"})


# -- the attackers' flips (no engine) ---------------------------------------------------------
def test_untargeted_attackers_flip_only_their_own_rows_within_their_budget(digits):
    """Padding rows (one per class a non-iid client lacks) used the --rate budget and went first for boundary."""
    from flipguard.attacks import make_flipper
    from flipguard.federated._simulate import flip_client

    X, y = digits
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    classes = np.arange(10)
    three = np.flatnonzero(np.isin(y, [1, 4, 7]))[:60]  # a client holding 3 of the 10 classes
    single = np.flatnonzero(y == 5)[:40]  # and one holding a single class
    for name in ("random", "boundary", "entropy", "noise_matrix"):
        for rows in (three, single):
            new = flip_client(make_flipper(name, rate=0.3, random_state=0), X[rows], y[rows], classes, seed=1)
            assert len(new) == len(rows)
            assert np.sum(new != y[rows]) == round(0.3 * len(rows)), (name, len(np.unique(y[rows])))


def test_every_attacker_flips_the_pair_the_metrics_score():
    """Without --source/--target each attacker's flipper picked its own rarest class; the pair is now resolved once."""
    from flipguard.attacks import TargetedFlip
    from flipguard.federated._simulate import flip_client, resolve_pair

    y = np.repeat(np.arange(4), [40, 30, 20, 50])  # rarest class 2, most frequent other 3
    attack = resolve_pair(TargetedFlip(rate=1.0), y)
    assert attack.get_params()["source"] == 2 and attack.get_params()["target"] == 3
    assert resolve_pair(TargetedFlip(source=1, rate=1.0), y).get_params()["target"] == 3
    parts = [np.flatnonzero(np.isin(y, held)) for held in ([0, 2], [1, 2, 3], [0, 1])]  # client 0's rarest is 2
    for rows in parts:
        new = flip_client(attack, np.zeros((len(rows), 2)), y[rows], np.arange(4), seed=0)
        changed = new != y[rows]
        assert set(y[rows][changed]) <= {2} and set(new[changed]) <= {3}
        assert changed.sum() == np.sum(y[rows] == 2)


# -- one small extra simulation: the default attack on non-iid clients, the share reported -----------
def test_default_targeted_attack_on_non_iid_clients_flips_one_pair_and_reports_the_true_share(digits_csv):
    """No --source/--target, Dirichlet clients: every attacker flips every row of the one pair the metrics score,
    and --malicious 0.35 of 5 clients is reported as what ran: 2 attackers, 0.4."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    args = ["federated", "simulate", str(digits_csv), "--label", "digit", "--clients", "5", "--malicious", "0.35",
            "--partition", "dirichlet", "--rounds", "2", "--defence", "fedavg", "--seed", "0", "--json"]
    with redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    doc = json.loads(buf.getvalue())
    s = doc["settings"]
    assert s["malicious"] == 0.4 and s["malicious_requested"] == 0.35 and s["malicious_counts"] == 2
    assert records(doc)["fedavg"]["malicious"] == 0.4
    # the pair a TargetedFlip picks on all the clients' rows: their rarest class, into their most frequent other
    from flipguard.federated._simulate import split_rows

    y = np.loadtxt(digits_csv, delimiter=",", skiprows=1, usecols=-1).astype(int)
    rest = split_rows(y, random_state=np.random.RandomState(0))[0]  # simulate's split (seed 0)
    counts = np.bincount(y[rest], minlength=10)
    source = int(np.argmin(counts))
    target = max((c for c in range(10) if c != source), key=lambda c: (counts[c], -c))
    assert (s["source"], s["target"]) == (str(source), str(target))
    assert str(s["attack_params"]["source"]) == s["source"] and str(s["attack_params"]["target"]) == s["target"]
    assert len(s["malicious_clients"]) == 2
    for i in s["malicious_clients"]:  # rate 1.0: each attacker flipped exactly its rows of the source class
        assert s["flipped_rows"][str(i)] == s["client_source_rows"][i] > 0


def test_an_untargeted_attack_with_a_source_parameter_reaches_the_engine(digits, no_engine):
    """``--attack cluster`` has a ``source`` parameter (None): the metrics probe ran it without features and
    the command died with a NumPy traceback before the simulation."""
    from flipguard.attacks import ClusterFlip

    X, y = digits
    with pytest.raises(_EngineStarted):  # every check and the attackers' flips passed
        simulate(X, y, attack=ClusterFlip(rate=0.2), n_clients=5, malicious=0.2, rounds=1, defences=["fedavg"])
