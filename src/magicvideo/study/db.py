"""The study's SQLite database: systems, their videos, the pairs shown, raters and votes.

One file (WAL mode, so it can be read and copied while the server writes), a versioned schema,
and every vote in its own transaction: a crash loses at most the vote in flight.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1
CHOICES = ("left", "same", "right")
# what the paper's raters weighed, together, for their one overall vote (MagicVideo-V2, Sec. 4)
CRITERIA = (
    "frame quality and visual appeal",
    "temporal consistency, motion range and motion validity",
    "fewer structural errors",
)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE systems (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
                      position INTEGER NOT NULL);
CREATE TABLE videos (id INTEGER PRIMARY KEY, system INTEGER NOT NULL REFERENCES systems(id),
                     prompt TEXT NOT NULL, source TEXT NOT NULL, file TEXT NOT NULL, UNIQUE (system, prompt));
CREATE TABLE pairs (id INTEGER PRIMARY KEY, prompt TEXT NOT NULL,
                    left_video INTEGER NOT NULL REFERENCES videos(id),
                    right_video INTEGER NOT NULL REFERENCES videos(id), position INTEGER NOT NULL);
CREATE TABLE raters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token TEXT NOT NULL UNIQUE,
                     kind TEXT NOT NULL CHECK (kind IN ('human', 'auto')), invite TEXT UNIQUE,
                     joined REAL NOT NULL);
CREATE TABLE invites (token TEXT PRIMARY KEY, rater INTEGER REFERENCES raters(id));
CREATE TABLE votes (id INTEGER PRIMARY KEY, pair INTEGER NOT NULL REFERENCES pairs(id),
                    rater INTEGER NOT NULL REFERENCES raters(id), criterion TEXT NOT NULL DEFAULT 'overall',
                    choice TEXT NOT NULL CHECK (choice IN ('left', 'same', 'right')), at REAL NOT NULL,
                    UNIQUE (pair, rater, criterion));
"""


class StudyError(ValueError):
    """A study file or request that cannot be used, said in one line."""


def connect(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """Open a study database (with `create`, a new one, which must not exist yet)."""
    path = Path(path)
    if create and path.exists():
        raise StudyError(f"{path} exists already; a new study needs a new file")
    if not create and not path.is_file():
        raise StudyError(f"no study database {path}")
    db = sqlite3.connect(path, timeout=10, isolation_level=None)  # explicit transactions below
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 10000")
    if create:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA)  # a new file: its builder renames it into place once complete
        with transaction(db):
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
        return db
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as err:
        raise StudyError(f"{path} is not a study database ({err})") from None
    if row is None or int(row["value"]) != SCHEMA_VERSION:
        raise StudyError(f"{path} has schema version {row and row['value']}; this magicvideo reads {SCHEMA_VERSION}")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception: a write is all or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def add_rater(db: sqlite3.Connection, name: str, kind: str = "human", invite: str | None = None) -> sqlite3.Row:
    """A new rater with a secret token (what the browser keeps); a taken name is an error."""
    name = " ".join(name.split())
    if not name or len(name) > 60:
        raise StudyError("a rater name is 1 to 60 characters")
    with transaction(db):
        if db.execute("SELECT 1 FROM raters WHERE name = ?", (name,)).fetchone():
            raise StudyError(f"the name {name!r} is taken; pick another")
        if invite is not None:
            row = db.execute("SELECT rater FROM invites WHERE token = ?", (invite,)).fetchone()
            if row is None or row["rater"] is not None:
                raise StudyError("that invite is unknown or used")
        token = secrets.token_urlsafe(24)
        cur = db.execute("INSERT INTO raters (name, token, kind, invite, joined) VALUES (?, ?, ?, ?, ?)",
                         (name, token, kind, invite, time.time()))
        if invite is not None:
            db.execute("UPDATE invites SET rater = ? WHERE token = ?", (cur.lastrowid, invite))
    return db.execute("SELECT * FROM raters WHERE id = ?", (cur.lastrowid,)).fetchone()


def add_invites(db: sqlite3.Connection, count: int) -> list[str]:
    tokens = [secrets.token_urlsafe(12) for _ in range(count)]
    with transaction(db):
        db.executemany("INSERT INTO invites (token) VALUES (?)", [(t,) for t in tokens])
    return tokens


def rater_by_token(db: sqlite3.Connection, token: str | None) -> sqlite3.Row:
    row = db.execute("SELECT * FROM raters WHERE token = ?", (token or "",)).fetchone()
    if row is None:
        raise StudyError("unknown rater token; join first")
    return row


def next_pair(db: sqlite3.Connection, rater: int) -> sqlite3.Row | None:
    """The first pair (in the study's shuffled order) this rater has not voted on."""
    return db.execute(
        "SELECT * FROM pairs WHERE id NOT IN (SELECT pair FROM votes WHERE rater = ?) ORDER BY position LIMIT 1",
        (rater,)).fetchone()


def progress(db: sqlite3.Connection, rater: int) -> tuple[int, int]:
    done = db.execute("SELECT COUNT(DISTINCT pair) FROM votes WHERE rater = ?", (rater,)).fetchone()[0]
    return done, db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]


def vote(db: sqlite3.Connection, rater: int, pair: int, choice: str, criterion: str = "overall") -> None:
    """Record one vote; a second vote by the same rater on the same pair is refused."""
    if choice not in CHOICES:
        raise StudyError(f"a vote is one of {CHOICES}, not {choice!r}")
    if criterion != "overall" and criterion not in CRITERIA:
        raise StudyError(f"unknown criterion {criterion!r}")
    with transaction(db):
        if db.execute("SELECT 1 FROM pairs WHERE id = ?", (pair,)).fetchone() is None:
            raise StudyError(f"no pair {pair}")
        try:
            db.execute("INSERT INTO votes (pair, rater, criterion, choice, at) VALUES (?, ?, ?, ?, ?)",
                       (pair, rater, criterion, choice, time.time()))
        except sqlite3.IntegrityError:
            raise StudyError(f"pair {pair} has this rater's vote already") from None
