"""Anchored chain: signed checkpoints of the audit chain, kept outside the database.

The chain's hashes are plain SHA-256, so whoever can write the database can rewrite a record and
recompute every later hash: the chain is then self-consistent again and ``audit verify`` alone cannot
tell. A checkpoint closes that gap. It lists the hash of every chained record since the previous
checkpoint, up to the chain head, and is signed with an Ed25519 key that is not in the database::

    sopagent audit keygen --out /etc/sopagent/anchor.key     # private key (0600) + anchor.key.pub
    sopagent audit checkpoint --key /etc/sopagent/anchor.key --out /mnt/worm/checkpoints
    sopagent audit verify --checkpoints /mnt/worm/checkpoints --public-key anchor.key.pub

Keep the checkpoint files where the database's writers cannot change them (write-once storage, another
machine). Verification needs only the public key: it checks each file's signature, then that every
record the files list still has the hash they list, and names the first record that does not. A
database writer without the private key cannot make a rewritten record match a checkpoint; what was
written after the last checkpoint is only as safe as the database until the next one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from filelock import FileLock
from sqlalchemy import text

from sopagent.errors import AnchorError
from sopagent.store import Store
from sopagent.store.chain import canonical
from sopagent.store.verify import chain_head

CHECKPOINT_GLOB = "checkpoint-*.json"
FORMAT = "sopagent-checkpoint-1"


def generate_key(path: str | Path) -> Path:
    """Write a new Ed25519 private key to ``path`` (mode 0600, refusing to overwrite) and its public key
    beside it (``path`` + ``.pub``); return the public key's path."""
    private_path = Path(path)
    if private_path.exists():
        raise AnchorError(f"{private_path} exists; a signing key is never overwritten (move it away to rotate "
                          "it, and keep its public key to verify the checkpoints it signed)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    public_path = private_path.with_name(private_path.name + ".pub")
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return public_path


def _load_private(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise AnchorError(f"cannot read the signing key {path}: {exc}; create one with "
                          "`sopagent audit keygen --out PATH`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} is not an Ed25519 key; create one with `sopagent audit keygen --out PATH`")
    return key


def _load_public(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise AnchorError(f"cannot read the public key {path}: {exc}; it is written beside the signing key "
                          "as KEY.pub by `sopagent audit keygen`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path} is not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, written in every checkpoint it signs."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(raw)
    return digest.finalize().hex()[:16]


def record_hashes(store: Store, first: int, last: int) -> dict[int, tuple[str, str, int | None]]:
    """seq -> (hash, kind, id) of every chained record with ``first <= seq <= last``."""
    found: dict[int, tuple[str, str, int | None]] = {}
    with store.engine.connect() as connection:
        for table, kind in (("decision", "decision"), ("operatoraction", "operator action")):
            for seq, hash_, row_id in connection.execute(text(
                    f"SELECT seq, hash, id FROM {table} WHERE seq >= :first AND seq <= :last"),
                    {"first": first, "last": last}):
                found[int(seq)] = (hash_, kind, row_id)
    return found


def checkpoints_in(directory: str | Path) -> list[Path]:
    """The checkpoint files of ``directory`` (or the one file given), oldest first."""
    place = Path(directory)
    if place.is_file():
        return [place]
    return sorted(place.glob(CHECKPOINT_GLOB))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnchorError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AnchorError(f"{path} is not a sopagent checkpoint (format {FORMAT})")
    return data


def write_checkpoint(store: Store, key_path: str | Path, directory: str | Path) -> Path | None:
    """Sign the records appended since the newest checkpoint in ``directory`` and write them there as
    ``checkpoint-<seq>.json``; None when the chain has not grown since."""
    key = _load_private(key_path)
    place = Path(directory)
    place.mkdir(parents=True, exist_ok=True)
    with FileLock(str(place / ".checkpoint.lock"), timeout=30):  # workers and cron take turns
        return _write_next(store, key, place)


def _write_next(store: Store, key: Ed25519PrivateKey, place: Path) -> Path | None:
    first = signed_through(place) + 1
    head = chain_head(store.engine)
    last = head[1] if head else 0
    if last < first:
        return None
    hashes_ = record_hashes(store, first, last)
    body = {"format": FORMAT, "first_seq": first, "last_seq": last, "head_hash": head[0] if head else "",
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "key_id": key_id(key.public_key()),
            "records": [[seq, hashes_[seq][0]] for seq in sorted(hashes_)]}
    body["signature"] = key.sign(canonical(body).encode("utf-8")).hex()
    path = place / f"checkpoint-{last:012d}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(body, out, indent=1)
    return path


@dataclass
class AnchorReport:
    """What checking the chain against signed checkpoints found."""

    files: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def anchored(self) -> bool:
        """True when every checkpoint is signed by the key and every record it lists is unchanged."""
        return self.files > 0 and not self.problems

    def describe(self) -> str:
        """One paragraph for people."""
        if self.files == 0:
            return ("no checkpoint given: the chain is only self-consistent and unanchored (a database writer "
                    "could have rewritten it and recomputed its hashes); pass --checkpoints DIR --public-key PATH")
        if self.problems:
            return "checkpoints do NOT match: " + "; ".join(self.problems)
        return f"anchored: {self.records} records match {self.files} signed checkpoint(s)"


def verify_checkpoints(store: Store, public_key_path: str | Path, directory: str | Path) -> AnchorReport:
    """Check every checkpoint's signature with the public key, then every record it lists against the
    database; the first record that differs is named."""
    public = _load_public(public_key_path)
    report = AnchorReport()
    for path in checkpoints_in(directory):
        data = _read(path)
        report.files += 1
        signature = str(data.pop("signature", ""))
        try:
            public.verify(bytes.fromhex(signature), canonical(data).encode("utf-8"))
        except (InvalidSignature, ValueError):
            report.problems.append(f"{path.name} is not signed by this key (key id {key_id(public)}): "
                                   "the file was changed or signed by another key")
            continue
        listed = {int(seq): hash_ for seq, hash_ in data["records"]}
        stored = record_hashes(store, int(data["first_seq"]), int(data["last_seq"]))
        for seq in sorted(listed):
            report.records += 1
            if seq not in stored:
                report.problems.append(f"record seq {seq} listed in {path.name} is missing from the database "
                                       "(deleted)")
                break
            hash_, kind, row_id = stored[seq]
            if hash_ != listed[seq]:
                report.problems.append(f"{kind} #{row_id} (seq {seq}) no longer matches {path.name}: it was "
                                       f"rewritten after {data['created_at']}")
                break
    return report


def records_since_checkpoint(store: Store, directory: str | Path) -> int:
    """How many records the chain has beyond the newest checkpoint in ``directory``."""
    head = chain_head(store.engine)
    return (head[1] if head else 0) - signed_through(directory)


def signed_through(directory: str | Path) -> int:
    """The last record the newest checkpoint in ``directory`` signs (0 when there is none)."""
    earlier = checkpoints_in(directory) if Path(directory).exists() else []
    return _last_seq(earlier[-1]) if earlier else 0


@functools.lru_cache(maxsize=64)
def _last_seq(path: Path) -> int:
    """A checkpoint's last record; read once per file, since a checkpoint is written once (read-only)."""
    return int(_read(path)["last_seq"])
