"""Protect labels in storage: keys, signed seals, verify, diff and a provenance ledger.

Threat model: an attacker can write to the data store (file, bucket, table,
pipeline step) and to where manifests are kept, but does not hold the sealing
private key.  See ``docs/integrity.md``.

Core API, on in-memory pyarrow Tables (an id column and a label column)::

    key = load_private_key("keys/flipguard.key")            # Ed25519, mode 0600 enforced
    manifest, snapshot = seal_table(table, label="y", id="row_id", private_key=key)
    report = verify_table(table, manifest, load_public_key("keys/flipguard.pub"), snapshot=snapshot)
    report.ok, report.changes.changed                       # row, id, before, after
    diff_tables(old, new, label="y", id="row_id").changes.shape["reading"]

File/URL/DSN wrappers read only the needed columns: :func:`seal` (writes
``DATA.flipguard.json`` and ``DATA.flipguard.snapshot``), :func:`verify`,
:func:`diff`.  The provenance ledger: :func:`ledger_append`,
:func:`verify_ledger`, :func:`show_ledger`.  Manifests: :class:`Manifest`
(canonical JSON, :meth:`Manifest.from_bytes` / :meth:`Manifest.to_bytes`),
:func:`load_manifest`, :func:`open_snapshot`.  Keys: :func:`write_keypair`,
:func:`generate_keypair`, :func:`key_id`.

This package never imports scikit-learn.
"""

from ._compare import LabelChanges
from ._diff import DiffReport, diff, diff_tables
from ._keys import (
    KeyPaths,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    write_keypair,
)
from ._lake import LakeDiffReport, LakeSealResult, LakeVerifyReport, diff_lake, seal_lake, verify_lake
from ._ledger import (
    LedgerAppend,
    LedgerReport,
    ledger_append,
    show_ledger,
    verify_ledger,
)
from ._manifest import Manifest, SignatureCheck, load_manifest
from ._pg import PgProtection, PgVerifyReport, protect, protection_status, unprotect, verify_postgres
from ._seal import SealResult, seal, seal_table
from ._snapshot import read_secret
from ._verify import VerifyReport, open_snapshot, verify, verify_table

__all__ = [
    "DiffReport",
    "KeyPaths",
    "LabelChanges",
    "LakeDiffReport",
    "LakeSealResult",
    "LakeVerifyReport",
    "LedgerAppend",
    "LedgerReport",
    "Manifest",
    "PgProtection",
    "PgVerifyReport",
    "SealResult",
    "SignatureCheck",
    "VerifyReport",
    "diff",
    "diff_lake",
    "diff_tables",
    "generate_keypair",
    "key_id",
    "ledger_append",
    "load_manifest",
    "load_private_key",
    "load_public_key",
    "open_snapshot",
    "protect",
    "protection_status",
    "read_secret",
    "seal",
    "seal_lake",
    "seal_table",
    "show_ledger",
    "unprotect",
    "verify",
    "verify_lake",
    "verify_ledger",
    "verify_postgres",
    "verify_table",
    "write_keypair",
]
