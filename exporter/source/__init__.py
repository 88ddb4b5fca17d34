"""The sync log: schema and migrations, engines, the snapshot reader, row cleaning, and the
pipeline writer API. Everything that speaks SQL lives here; nothing above it does."""
