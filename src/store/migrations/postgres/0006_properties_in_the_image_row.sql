-- An image's properties move into its row: a JSON array of [name, value] pairs in insertion
-- order (value null for a key without one), and a revision counted up by every write of the
-- row. A metadata write is then one single-row update, made optimistically: it applies when
-- the row is still at the revision it read (see store/postgres/batch.rs), with no row of a
-- second table (and its two indexes) to write per key.
ALTER TABLE images
    ADD COLUMN properties JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
UPDATE images AS i SET properties = p.pairs
FROM (SELECT image_id, jsonb_agg(jsonb_build_array(name, value) ORDER BY position) AS pairs
      FROM image_properties GROUP BY image_id) AS p
WHERE i.id = p.image_id;
DROP TABLE image_properties;
