-- Glance's metadata definitions catalogue (metadefs): namespaces of property definitions, the
-- resource types they apply to, and their objects, properties and tags. Names are unique in
-- byte order (case-sensitive) except tags, which are unique case-insensitively (as Glance
-- says they are): `folded` is the name lower-cased, by imagemeta, the same way on every
-- backend. Timestamps are microseconds since the Unix epoch; an `updated_at` is NULL for rows
-- a definition file loaded and nothing changed since.
CREATE TABLE metadef_namespaces (
    id           INTEGER PRIMARY KEY,
    namespace    TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description  TEXT,
    -- 'public' or 'private'; NULL when a definition file names none (private).
    visibility   TEXT,
    -- NULL when a definition file names none (false).
    protected    INTEGER,
    owner        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER
);
-- The listing's default order (newest first) and its keyset.
CREATE INDEX metadef_namespaces_by_created ON metadef_namespaces (created_at, id);

CREATE TABLE metadef_resource_types (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    -- Loaded from a definition file (as opposed to created by an association).
    protected  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER
);

CREATE TABLE metadef_namespace_resource_types (
    id                INTEGER PRIMARY KEY,
    namespace_id      INTEGER NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    resource_type_id  INTEGER NOT NULL REFERENCES metadef_resource_types (id),
    prefix            TEXT,
    properties_target TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER,
    UNIQUE (namespace_id, resource_type_id)
);
CREATE INDEX metadef_namespace_resource_types_by_type ON metadef_namespace_resource_types (resource_type_id);

CREATE TABLE metadef_objects (
    id           INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    -- The names of the required properties, a JSON array.
    required     TEXT NOT NULL,
    -- The property definitions, a JSON object in their given order.
    json_schema  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER,
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_properties (
    id           INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- The definition, a JSON object.
    json_schema  TEXT NOT NULL,
    UNIQUE (namespace_id, name)
);

CREATE TABLE metadef_tags (
    id           INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES metadef_namespaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    folded       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER,
    UNIQUE (namespace_id, folded)
);
