"""flipguard.federated: label-flipping clients and defences on Flower's real simulation engine.

Two simulations in total (10 clients, 5 rounds, digits): one through the CLI
with every defence, one through the Python API, which must reproduce the
CLI's numbers exactly (same seed, fresh Ray instance, new random node ids).
"""

from __future__ import annotations

import json
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
