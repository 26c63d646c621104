"""``flipguard federated simulate``: label-flipping clients against Flower defences, on Flower's simulation engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._names import ATTACK_NAMES
from ..exceptions import InvalidParameterError
from ._app import _state, app
from ._common import (
    DataArg,
    IdOpt,
    JsonOpt,
    LabelOpt,
    SeedOpt,
    TableOpt,
    check_output_file,
    check_parent_folder,
    class_value,
    console,
    fmt,
    parse_floats,
    print_json,
    refuse_overwrite,
    split_list,
)

federated_app = typer.Typer(help="Federated learning (Flower): simulate label-flipping clients against defences."
                            "\n\nExample:\n\n\b\n    flipguard federated simulate digits.csv --label digit --rounds 20",
                            no_args_is_help=True)
app.add_typer(federated_app, name="federated")

DEFENCE_CHOICES = ("fedavg", "krum", "multikrum", "median", "trimmed_mean", "bulyan", "lfighter", "tolpegin",
                   "fltrust")


@federated_app.command("simulate")
def simulate_cmd(
    data: DataArg,
    label: LabelOpt,
    clients: Annotated[int, typer.Option("--clients", help="Number of federated clients.")] = 10,
    malicious: Annotated[str, typer.Option("--malicious", help="Fraction of clients that flip labels (several, "
                                           "comma-separated, run against the same clients).")] = "0.4",
    attack: Annotated[str, typer.Option("--attack", help="Flipper the attackers use: " + ", ".join(ATTACK_NAMES)
                                        + " (see flipguard attack).")] = "targeted",
    source: Annotated[str | None, typer.Option("--source", help="targeted: class whose rows are flipped "
                                               "(also the class scored for source recall; a true/false "
                                               "label matches in any case).")] = None,
    target: Annotated[str | None, typer.Option("--target", help="targeted: class they become.")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Fraction flipped per attacker (targeted: of the "
                                               "source class, default 1.0; other attacks: of all rows).")] = None,
    attack_from: Annotated[int, typer.Option("--attack-from", help="First round in which attackers flip.")] = 1,
    attacker_pool: Annotated[str, typer.Option(
        "--attacker-pool", help="Where attackers are drawn: source (among clients holding the attack's "
                                "source class, as Jebreel et al.'s code does) or any client.")] = "source",
    partition: Annotated[str, typer.Option("--partition", help="iid or dirichlet.")] = "iid",
    alpha: Annotated[float, typer.Option("--alpha", help="dirichlet: concentration (smaller = less iid).")] = 0.5,
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 20,
    defence: Annotated[str, typer.Option("--defence", help="Comma-separated: " + ", ".join(DEFENCE_CHOICES)
                                         + ".")] = "fedavg,lfighter",
    model: Annotated[str, typer.Option("--model", "-m", help="Client model: logreg or mlp.")] = "logreg",
    epochs: Annotated[int, typer.Option("--epochs", help="Local epochs per round.")] = 5,
    seed: SeedOpt = 0,
    id: IdOpt = None,  # noqa: A002
    table: TableOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report (figures per round).")]
    = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulate label-flipping clients and compare defences, round by round.

    Runs on Flower's simulation engine (Ray, one CPU per client, two in
    total).  A FedAvg run without attackers always runs first as the
    baseline.  Per round: global accuracy, source-class recall, attack
    success rate (source rows predicted as the target) and, for defences
    that name suspects (lfighter, tolpegin, fltrust), precision and recall
    of the malicious clients found.  Needs the extra: pip install 'flipguard\\[federated]'.

    Example:

        flipguard federated simulate digits.csv --label digit --attack targeted \\
            --source 3 --target 8 --malicious 0.4 --defence fedavg,median,lfighter --report fl.html
    """
    from ..attacks import make_flipper
    from ..data import load

    try:
        from ..federated._simulate import check_settings
    except ImportError:
        raise InvalidParameterError("federated simulation needs Flower: pip install 'flipguard[federated]'") \
            from None

    # Output paths first: nothing runs (or is read) when the report could not be written or is the input.
    refuse_overwrite(data, report, "--report")
    if report is not None:
        check_parent_folder(report, "--report")  # a folder that does not exist, or a file where a folder should be
        check_output_file(report, "--report")  # a folder, or a place no file can be created (tried, not guessed)
    defences = split_list(defence, "--defence")
    unknown = [d for d in defences if d not in DEFENCE_CHOICES]
    if unknown:
        raise InvalidParameterError(f"--defence {','.join(unknown)} is not a defence; choose from "
                                    f"{', '.join(DEFENCE_CHOICES)}")
    if clients < 3:
        raise InvalidParameterError(f"--clients must be at least 3; got {clients}")
    fractions = parse_floats(malicious, "--malicious")
    if attacker_pool not in ("source", "any"):
        raise InvalidParameterError(f"--attacker-pool must be source or any; got {attacker_pool!r}")
    if attack not in ATTACK_NAMES:
        raise InvalidParameterError(f"--attack {attack} is not an attack; choose from {', '.join(ATTACK_NAMES)}")
    if rate is not None and not 0 < rate <= 1:
        raise InvalidParameterError(f"--rate must be in (0, 1]; got {rate}")
    if attack == "targeted":
        params = {"rate": 1.0 if rate is None else rate, "source": source, "target": target}
    else:
        if rate is None:
            raise InvalidParameterError(f"--attack {attack} needs --rate (the fraction of each attacker's rows)")
        params = {"rate": rate}
    # every setting that does not need the data (attackers per fraction, each defence's needs, epochs,
    # --attack-from, ...), before the data are read
    check_settings(n_clients=clients, malicious=fractions, rounds=rounds, attack_from=attack_from,
                   defences=defences, partition=partition, alpha=alpha, model=model, epochs=epochs,
                   attacker_pool=attacker_pool)
    flipper = make_flipper(attack, random_state=seed, **params)
    ds = load(data, label=label, id=id, table=table)
    if ds.classes.dtype == bool:  # a true/false label column: --source true matches True, as --source True does
        source, target = (c if class_value(c, ds) is None else str(class_value(c, ds)) for c in (source, target))
        if attack == "targeted":
            flipper.set_params(source=source, target=target)

    from ..federated import simulate

    result = simulate(ds.X, ds.labels(), attack=flipper if max(fractions) > 0 else None, n_clients=clients,
                      malicious=fractions, attack_from=attack_from, partition=partition, alpha=alpha,
                      rounds=rounds, defences=defences, model=model, epochs=epochs,
                      source=source, target=target, random_state=seed,
                      verbose=_state["debug"], dataset=ds.source, attacker_pool=attacker_pool)
    if report is not None:
        from ..report._federated import write_federated_report

        write_federated_report(report, result)
    if json_out:
        print_json(result.to_dict())
        return
    s = result.settings
    console.print(f"[bold]{s['n_clients']}[/] clients ({s['partition']}"
                  f"{', alpha ' + str(s['alpha']) if s['alpha'] else ''}), malicious "
                  f"{s['malicious_clients'] or 'none'} with [bold]{s['attack'] or '-'}[/]"
                  f"{' ' + s['source'] + ' -> ' + s['target'] if s['source'] and s['target'] else ''}"
                  f", {s['rounds']} rounds, seed {s['seed']}")
    t = Table("defence", "malicious", "accuracy", "source recall", "attack success", "det. precision",
              "det. recall", "suspects (last round)", title="Final round")
    for r in result.runs:
        f = r.final
        t.add_row(r.defence, f"{r.malicious:.0%}", fmt(f.accuracy), fmt(f.source_recall),
                  fmt(f.attack_success_rate), fmt(f.detection_precision), fmt(f.detection_recall),
                  "-" if f.suspects is None else ",".join(map(str, f.suspects)) or "none")
    console.print(t)
    if report is not None:
        console.print(f"report written to {report}")
