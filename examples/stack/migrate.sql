-- The app's schema and its one row; safe to run again.
CREATE TABLE IF NOT EXISTS greetings (id integer PRIMARY KEY, text text NOT NULL);
INSERT INTO greetings (id, text) VALUES (1, 'hello from postgres') ON CONFLICT (id) DO NOTHING;
