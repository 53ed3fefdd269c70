-- The catalogue on PostgreSQL: the same tables as SQLite's (after its migration 0005), in
-- PostgreSQL's types. Timestamps are microseconds since the Unix epoch (UTC) in BIGINT, as in
-- SQLite, so both stores compare, sort and page the same way; text sorts in byte order
-- (COLLATE "C" in the queries), as in SQLite.
CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    name             TEXT,
    status           TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    owner            TEXT,
    protected        BOOLEAN NOT NULL DEFAULT FALSE,
    os_hidden        BOOLEAN NOT NULL DEFAULT FALSE,
    size             BIGINT,
    virtual_size     BIGINT,
    min_disk         BIGINT NOT NULL DEFAULT 0,
    min_ram          BIGINT NOT NULL DEFAULT 0,
    disk_format      TEXT,
    container_format TEXT,
    checksum         TEXT,
    os_hash_algo     TEXT,
    os_hash_value    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- Who holds the upload of a `saving` image, and where its partial data is staged.
    upload_node      TEXT,
    upload_staging   TEXT
);
-- The listing order of both APIs (newest first, id breaking ties) and its keyset.
CREATE INDEX images_by_created ON images (created_at DESC, id COLLATE "C" DESC);
CREATE INDEX images_by_owner ON images (owner, created_at DESC, id COLLATE "C" DESC);
CREATE INDEX images_by_upload_node ON images (upload_node) WHERE upload_node IS NOT NULL;

-- Every non-base property (the Compute API's metadata), in each image's insertion order.
CREATE TABLE image_properties (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    value    TEXT,
    position BIGINT NOT NULL,
    PRIMARY KEY (image_id, name)
);
CREATE INDEX image_properties_by_value ON image_properties (name, value);

CREATE TABLE image_tags (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (image_id, tag)
);

-- Ids of deleted images: Glance never lets an id be used twice.
CREATE TABLE deleted_image_ids (
    id         TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);

-- Projects a `shared` image is shared with, and whether they accepted it.
CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX image_members_by_member ON image_members (member, status, image_id);

-- The imagemeta processes serving this catalogue, each with a lease it renews.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
