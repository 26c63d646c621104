"""Partitioned datasets in the CLI: ``audit``, ``seal``, ``verify`` and ``diff`` on a folder or prefix.

The command modules call in here when DATA is a partitioned dataset (a folder
or an fsspec prefix of Parquet/CSV files); ``--engine`` chooses where the
partition tasks run.  Only typer/rich/stdlib at import time: the library (and
Ray) are imported inside the functions.
"""

from __future__ import annotations

import os

import typer
from rich.table import Table

from ._common import console, err_console, print_json


def is_partitioned_source(data: str, table: str | None = None) -> bool:
    """DATA names a folder or a prefix of files (not a file, DSN or table)."""
    if table is not None:
        return False
    from ..data._partitioned import is_partitioned

    return is_partitioned(data)


def note_single(engine: str, ray_address: str | None) -> None:
    """``--engine ray`` on one file: the work runs in this process (say so, once)."""
    from ..exceptions import InvalidParameterError

    if engine not in ("local", "ray"):
        raise InvalidParameterError(f"--engine must be one of local, ray; got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise InvalidParameterError("--ray-address needs --engine ray")
    if engine == "ray":
        err_console.print("note: DATA is a single file, handled in this process; --engine ray distributes "
                          "partitioned datasets (a folder or prefix of files)", soft_wrap=True)


def refuse_single_table_options(given: dict) -> None:
    """Refuse the options a partitioned audit cannot honour (``{option: value}``; ``None``, ``False``
    and empty values were not given), rather than ignore them."""
    from ..exceptions import InvalidParameterError

    named = [opt for opt, value in given.items() if value not in (None, False, [], ())]
    if named:
        raise InvalidParameterError(
            f"{', '.join(named)} {'is' if len(named) == 1 else 'are'} not supported on a partitioned dataset "
            "(a folder or prefix of files, audited by confident learning per partition on its numeric "
            "columns); audit a single file for "
            f"{'it' if len(named) == 1 else 'them'}")


def refuse_missing(data: str) -> None:
    """A local DATA that does not exist, said as such before any output name is derived from it
    (``seal nonexist/`` said ``--out nonexist/.flipguard.json: folder nonexist does not exist``)."""
    from ..data._read import _is_url, is_postgres
    from ..exceptions import DataError

    if not (_is_url(data) or is_postgres(data)) and not os.path.exists(data):
        raise DataError(f"{data}: no such file or folder")


def refuse_folder_and_file(folder: str, other: str) -> None:
    """``diff`` of a folder (a partitioned dataset) with something that is not one: name a path that
    does not exist, else say that a folder and a single file or table cannot be compared."""
    from ..exceptions import InvalidParameterError

    refuse_missing(other)
    raise InvalidParameterError(f"cannot compare {folder} (a folder of partitions) with {other} (a single "
                                "file or table): give two folders, or two files")


def vector_columns(data, label: str, id: str | None) -> None:
    """A partitioned audit reads one number per column.  Columns of numeric vectors (an embedding
    stored as a list per row, read by a single-file audit) are refused when they are all the
    features there are, and named in a warning otherwise, never left out unsaid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data._partitioned import discover
    from ..exceptions import DataError
    from ._common import note

    part = discover(data).partitions[0]
    if part.format != "parquet":
        return  # a CSV cannot hold lists
    try:
        if "://" in part.path:
            from ..data._read import _open_url

            with _open_url(part.path) as fh:
                schema = pq.read_schema(fh)
        else:
            schema = pq.read_schema(part.path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"partition {part.name}: cannot read as PARQUET: {exc}") from None
    fields = [f for f in schema if f.name not in (label, id) and f.name not in part.keys]
    vectors = [f.name for f in fields if (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                                           or pa.types.is_fixed_size_list(f.type))
               and (pa.types.is_integer(f.type.value_type) or pa.types.is_floating(f.type.value_type))]
    if not vectors:
        return
    what = (f"column(s) {', '.join(repr(v) for v in vectors)} hold vectors (embeddings), which a partitioned "
            "audit does not read yet (it uses one number per column)")
    numeric = [f for f in fields if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
               or pa.types.is_boolean(f.type)]
    if not numeric:
        raise DataError(f"partition {part.name}: {what}; audit a single file, or store one number per column")
    note(f"warning: partition {part.name}: {what}: not used as features")


def _say(text: str) -> None:
    console.print(text, soft_wrap=True)


def _engine_text(info: dict) -> str:
    return f"engine {info.get('engine')}, {info.get('workers')} worker(s)"


def seal(data, *, label, id, key, out, columns, secret, name, version, engine, ray_address, json_out) -> None:
    from ..integrity._lake import seal_lake

    res = seal_lake(data, label=label, id=id, private_key=key, out=out, columns=columns, secret=secret,
                    name=name, version=version, engine=engine, ray_address=ray_address)
    if json_out:
        print_json(res.to_dict())
        return
    m = res.manifest
    _say(f"Sealed {m['rows']} rows in {len(m['partitions'])} partitions of {m['source']} as '{m['name']}' "
         f"version {m['version']} (label '{m['label']}', id '{m['id'] or '(row)'}') with key {m['key_id']} "
         f"({_engine_text(res.engine)})" + (" [bold](private)[/]" if m["private"] else ""))
    _say(f"  manifest:    {res.manifest_path}")
    _say(f"  partitions:  {res.store}")
    _say(f"  merkle root: {m['merkle']['root']}")


def audit(data, *, label, id, model, method, cv, seed, out, top, fail_above, json_out, engine,
          ray_address, training="auto", max_train_rows=1_000_000) -> None:
    from ..detection import audit_partitioned
    from ..detection._partitioned import check_audit_out

    check_audit_out(data, out)  # before any work, as audit_partitioned does
    vector_columns(data, label, id)
    if model == "auto":  # the single-process model search needs every row in one process
        model = "logreg"
    res = audit_partitioned(data, label=label, id=id, model=model, method=method, cv=cv, random_state=seed,
                            out=out, top=top, engine=engine, ray_address=ray_address, training=training,
                            max_train_rows=max_train_rows)
    if json_out:
        print_json(res.to_dict())
    else:
        _say(f"[bold]{res.n_flagged}[/] of {res.n_samples} labels flagged in {len(res.partitions)} partitions; "
             f"estimated flips [bold]{res.estimated_flips}[/] ({res.estimated_flip_rate:.1%}) by method "
             f"{res.method} ({_engine_text(res.engine)})")
        if res.training == "incremental":
            _say(f"fold models: {res.model}, {cv} folds, learnt incrementally from all {res.train_rows} rows "
                 "(one partition at a time)")
        else:
            _say(f"fold models: {model}, {cv} folds, fitted on {res.train_rows} rows"
                 + ("" if res.exact_training else " (a seeded sample; every row is still judged out-of-fold)"))
        if res.transitions:
            t = Table("true (suggested)", "observed", "rows", title="Estimated flips by class pair")
            for tr in res.transitions[:20]:
                t.add_row(str(tr["from"]), str(tr["to"]), str(tr["count"]))
            console.print(t)
        if res.top:
            t = Table("partition", "row", "id", "label", "suggested", "score", title=f"Top {len(res.top)} suspects")
            for r in res.top:
                t.add_row(r["partition"], str(r["row"]), str(r["id"]), str(r["label"]), str(r["suggested"]),
                          f"{r['score']:.3f}")
            console.print(t)
        _say(f"per-row results written to {res.out}{os.sep} (one Parquet file per partition)")
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    if fail_above is not None and res.estimated_flip_rate > fail_above:
        if not json_out:
            err_console.print(f"estimated flip rate {res.estimated_flip_rate:.1%} exceeds --fail-above "
                              f"{fail_above:.1%}")
        raise typer.Exit(1)
