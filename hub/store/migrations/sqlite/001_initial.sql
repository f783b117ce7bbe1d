-- livehub store, SQLite: projects, API keys, hub-wide values and stored (ended) sessions.
-- Times are milliseconds since the epoch.

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- from 1, never reused
    project_key TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Only the SHA-256 of a key's secret is kept; revoked keys stay, marked, so ids are never reused.
CREATE TABLE api_keys (
    key_id        TEXT    PRIMARY KEY,
    project_id    INTEGER REFERENCES projects (id),  -- NULL: an organization key
    name          TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

-- Values made once for the whole cluster, such as the JWT secret.
CREATE TABLE hub_values (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per end of a session; end_id makes the write idempotent. data_text is the compact
-- JSON that is returned and searched, byte for byte.
CREATE TABLE stored_sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FTS rowid: never reused
    end_id     TEXT    NOT NULL UNIQUE,
    project_id INTEGER NOT NULL,
    session_id TEXT    NOT NULL,
    data_text  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL
);

CREATE INDEX stored_sessions_recent
    ON stored_sessions (project_id, updated_at DESC, session_id, id);
CREATE INDEX stored_sessions_by_session
    ON stored_sessions (project_id, session_id, updated_at DESC, id DESC);

-- Case-sensitive trigram index over data_text. External content: the text lives once, in
-- stored_sessions; the FTS table holds only the index, and 'rebuild' can remake it from there.
CREATE VIRTUAL TABLE stored_sessions_fts USING fts5 (
    data_text,
    content = 'stored_sessions',
    content_rowid = 'id',
    tokenize = 'trigram case_sensitive 1'
);

CREATE TRIGGER stored_sessions_fts_insert AFTER INSERT ON stored_sessions BEGIN
    INSERT INTO stored_sessions_fts (rowid, data_text) VALUES (new.id, new.data_text);
END;

CREATE TRIGGER stored_sessions_fts_delete AFTER DELETE ON stored_sessions BEGIN
    INSERT INTO stored_sessions_fts (stored_sessions_fts, rowid, data_text)
        VALUES ('delete', old.id, old.data_text);
END;

CREATE TRIGGER stored_sessions_fts_update AFTER UPDATE OF data_text ON stored_sessions BEGIN
    INSERT INTO stored_sessions_fts (stored_sessions_fts, rowid, data_text)
        VALUES ('delete', old.id, old.data_text);
    INSERT INTO stored_sessions_fts (rowid, data_text) VALUES (new.id, new.data_text);
END;
