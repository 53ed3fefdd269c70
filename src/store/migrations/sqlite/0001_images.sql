-- Images with Glance's base attributes in typed columns. Timestamps are microseconds since the
-- Unix epoch (UTC), so keyset pagination compares integers.
CREATE TABLE images (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT,
    status           TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    owner            TEXT,
    protected        INTEGER NOT NULL DEFAULT 0,
    os_hidden        INTEGER NOT NULL DEFAULT 0,
    size             INTEGER,
    virtual_size     INTEGER,
    min_disk         INTEGER NOT NULL DEFAULT 0,
    min_ram          INTEGER NOT NULL DEFAULT 0,
    disk_format      TEXT,
    container_format TEXT,
    checksum         TEXT,
    os_hash_algo     TEXT,
    os_hash_value    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- The listing order of both APIs (newest first, id breaking ties) and its keyset.
CREATE INDEX images_by_created ON images (created_at DESC, id DESC);
CREATE INDEX images_by_owner ON images (owner, created_at DESC, id DESC);

-- Every non-base property (the Compute API's metadata). The rowid keeps insertion order,
-- which an upsert preserves.
CREATE TABLE image_properties (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    value    TEXT,
    UNIQUE (image_id, name)
);
-- Property filters (`property-<k>=v`, `server`, `type`) look up by name and value.
CREATE INDEX image_properties_by_value ON image_properties (name, value);

CREATE TABLE image_tags (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (image_id, tag)
) WITHOUT ROWID;
