-- Which image store holds an image's data, and where in it (the store's own name for it).
-- NULL in both: data written before stores had names, in the `file` store's layout.
ALTER TABLE images ADD COLUMN store TEXT;
ALTER TABLE images ADD COLUMN location TEXT;
