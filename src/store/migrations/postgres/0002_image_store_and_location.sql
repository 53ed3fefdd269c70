-- Which image store holds an image's data, and where in it (the store's own name for it).
ALTER TABLE images ADD COLUMN store TEXT;
ALTER TABLE images ADD COLUMN location TEXT;
