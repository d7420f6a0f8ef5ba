"""One reader per source dataset format, each returning SourceClip objects for the MOSE-layout writer."""
